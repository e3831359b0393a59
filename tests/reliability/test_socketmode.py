"""Socket Mode reliability: the SocketModeClient against the simulated workspace, over real sockets.

The workspace records every envelope it writes (``sim.envelopes_sent``),
every ack it reads (``sim.acks``), every retry of an event not acked in time
(``sim.redelivered``, ``acked_late`` when the ack came after the retry) and
every event it gave up on (``sim.undelivered``). The client records every
envelope it reads in its EventFrame (a row per envelope: its id, event id, retry
attempt and whether it was a duplicate; ``raw`` the whole envelope) and hands
the inner event, which carries the workspace's ``sim_seq``, to handlers.
Each test compares the two records after a load or a fault: every event
recorded, dispatched exactly once, in order per connection, acked, and never
redelivered because an ack was late. Time appears as hang guards, as the
quiet spells that show nothing more comes, and in two bounds that follow
from the client's own settings (a handful of connect calls in a few seconds
of backoff; an empty ack only after the answer deadline), never as a speed
target.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import traceback
from collections import Counter, defaultdict

import orjson
import pandas as pd
import pytest

from rtm_notebook import SocketModeClient
from rtm_notebook.notebook.livelog import LiveLog
from rtm_notebook.socketmode.protocol import ANSWER_DEADLINE, SocketModeConnectError, SocketModeDisabled

from rel_support import GUARD, errors, general, human, reachable, until
from sim_support import SmSocket

BURST = 100_000


def sm_client(sim, **kwargs) -> SocketModeClient:
    kwargs.setdefault("ping_interval", 5)
    kwargs.setdefault("app_token", sim.app_token)
    return SocketModeClient(token=sim.token, base_url=sim.base_url, **kwargs)


class Dispatched:
    """A ``"*"`` handler on the loop: every inner event with a sim_seq it got, in order."""

    def __init__(self, client: SocketModeClient) -> None:
        self.seqs: list[int] = []

        @client.on("*", name="rel_dispatched")
        async def dispatched(client, event):
            seq = event.get("sim_seq")
            if seq is not None:
                self.seqs.append(seq)

    def __len__(self) -> int:
        return len(self.seqs)


class Recorded:
    """The envelopes in the client's EventFrame, from its Socket Mode columns (``envelope_id``,
    ``envelope_type``, ``event_id``, ``retry_attempt``, ``duplicate``), each checked against ``raw``
    (the whole envelope as it arrived), which also gives the inner event's ``sim_seq``."""

    def __init__(self, client: SocketModeClient) -> None:
        df = client.events
        rows = df[(df["direction"] == "in") & df["envelope_id"].notna()]
        self.by_conn: dict[int, list[dict]] = defaultdict(list)
        self.rows: list[dict] = []  # in recording order
        self.marked: set[int] = set()  # rows the client marked duplicate
        columns = ["connection", "envelope_id", "envelope_type", "event_id", "retry_attempt", "duplicate", "raw"]
        for i, (conn, envelope_id, kind, event_id, attempt, duplicate, raw) in zip(
                rows.index.tolist(), rows[columns].astype(object).itertuples(index=False)):
            envelope = orjson.loads(raw)
            payload = envelope.get("payload") or {}
            event = payload.get("event") if isinstance(payload.get("event"), dict) else {}
            row = {"index": i, "connection": conn, "envelope_id": envelope_id, "type": kind,
                   "event_id": None if pd.isna(event_id) else event_id,
                   "retry_attempt": None if pd.isna(attempt) else int(attempt), "sim_seq": event.get("sim_seq")}
            # The columns say what the envelope says.
            assert (envelope["envelope_id"], envelope.get("type"), payload.get("event_id"),
                    envelope.get("retry_attempt")) == (envelope_id, kind, row["event_id"], row["retry_attempt"]), raw
            if duplicate is True:
                self.marked.add(i)
            self.rows.append(row)
            self.by_conn[conn].append(row)

    def repeats(self) -> set[int]:
        """Rows of an event_id recorded earlier (redeliveries the client had already)."""
        seen, out = set(), set()
        for r in self.rows:
            if r["event_id"] is None:
                continue
            if r["event_id"] in seen:
                out.add(r["index"])
            seen.add(r["event_id"])
        return out


def events_sent(sim) -> list[dict]:
    return [e for e in sim.envelopes_sent if e["type"] == "events_api"]


async def settled(sim, client, dispatched: Dispatched, what: str) -> None:
    """Every event the workspace numbered was acked (some attempt of it) and reached the handler."""
    def done() -> bool:
        n = sim.events_dispatched
        acked = {a["event_id"] for a in sim.acks if a["event_id"] is not None}
        return n > 0 and len(acked) == n and len(dispatched) >= n
    await until(done, what)


def assert_delivered(sim, client, dispatched: Dispatched, *, aborted: frozenset[int] = frozenset(),
                     redeliveries: bool = False) -> Recorded:
    """The checks every test of this module makes once traffic has settled.

    ``aborted``: connections whose TCP connection was dropped, so what the
    workspace wrote last may never have reached the client (the workspace
    redelivers it: ``redeliveries``).
    """
    rec = Recorded(client)
    sent = events_sent(sim)
    n = sim.events_dispatched
    assert n > 0 and {e["sim_seq"] for e in sent} == set(range(1, n + 1))
    assert sim.undelivered == []

    # 1. the client recorded what each connection carried, in the order it was written
    sent_by_conn: dict[int, list[str]] = defaultdict(list)
    for e in sim.envelopes_sent:
        sent_by_conn[e["connection"]].append(e["envelope_id"])
    counts = ({c: len(ids) for c, ids in sent_by_conn.items()}, {c: len(rows) for c, rows in rec.by_conn.items()},
              closes(client))
    for conn in set(sent_by_conn) | set(rec.by_conn):
        ids = sent_by_conn.get(conn, [])
        got = [r["envelope_id"] for r in rec.by_conn.get(conn, [])]
        if conn in aborted:
            assert got == ids[:len(got)], f"connection {conn}: not a prefix of what the workspace wrote; {counts}"
        else:
            assert got == ids, f"connection {conn}: written, recorded per connection, closes: {counts}"

    # 2. every event_id the workspace sent is recorded
    recorded_ids = {r["event_id"] for r in rec.rows if r["event_id"] is not None}
    assert {e["event_id"] for e in sent} <= recorded_ids

    # 3. in order per connection: first deliveries' sim_seq increase on each connection
    for conn, rows in rec.by_conn.items():
        firsts = [r["sim_seq"] for r in rows if r["type"] == "events_api" and r["retry_attempt"] == 0]
        assert firsts == sorted(firsts) and len(set(firsts)) == len(firsts), f"connection {conn}: out of order"

    # 4. dispatched exactly once, in each connection's recorded order
    counts = Counter(dispatched.seqs)
    assert set(counts) == set(range(1, n + 1)), "some events never reached the handler"
    twice = [s for s, c in counts.items() if c > 1]
    assert twice == [], f"{len(twice)} events dispatched more than once, e.g. {twice[:5]}"
    first_conn: dict[int, int] = {}
    order: dict[int, list[int]] = defaultdict(list)
    for r in rec.rows:
        if r["sim_seq"] is not None and r["sim_seq"] not in first_conn:
            first_conn[r["sim_seq"]] = r["connection"]
            order[r["connection"]].append(r["sim_seq"])
    for conn, seqs in order.items():
        assert [s for s in dispatched.seqs if first_conn[s] == conn] == seqs, f"connection {conn}: dispatch order"

    # 5. duplicates: redeliveries of an event the client had already are marked, counted, not dispatched again
    assert rec.marked == rec.repeats()
    assert client.duplicates == len(rec.marked)

    # 6. the workspace's records: every event acked, no ack late, no retry caused by one
    acks = sim.acks
    assert [a for a in acks if a["late"]] == []
    assert [r for r in sim.redelivered if r["acked_late"]] == []
    acked_ids = {a["envelope_id"] for a in acks}
    for e in sent:
        if e["connection"] not in aborted:
            assert e["envelope_id"] in acked_ids, f"envelope {e['envelope_id']} on #{e['connection']} never acked"
    assert {a["event_id"] for a in acks if a["event_id"] is not None} == {e["event_id"] for e in sent}
    if not redeliveries:
        assert sim.redelivered == []
    return rec


async def connected(client, number: int) -> None:
    await until(lambda: client.state == "connected" and client.connection_number >= number,
                f"connection #{number} to say hello")


def closes(client) -> list[dict]:
    df = client.events
    return [orjson.loads(r) for r in df[df["type"] == "close"]["raw"].tolist()]


async def marker(sim, client, label: str) -> None:
    """Post a message and wait until the client recorded it: everything queued before it was read."""
    text = f"MARK {label}"
    got: list = []

    def tap(event: dict) -> None:
        if event.get("text") == text:
            got.append(event)
    client.add_tap(tap)
    sim.post_message(human(sim), "general", text)
    await until(lambda: got, f"marker {label!r}")
    client.remove_tap(tap)


# -- 1. load ---------------------------------------------------------------------------


async def test_burst_right_after_hello_is_recorded_dispatched_once_in_order_and_acked(sim):
    sim.burst_after_hello(BURST)
    client = sm_client(sim)
    dispatched = Dispatched(client)
    await asyncio.wait_for(client.connect(), GUARD)
    await settled(sim, client, dispatched, "the burst to be acked and dispatched")
    await client.async_stop()

    rec = assert_delivered(sim, client, dispatched)
    assert client.connection_number == 1 and set(rec.by_conn) == {1}
    assert len(events_sent(sim)) == sim.events_dispatched > BURST // 2  # typing and presence are RTM-only
    assert client.duplicates == 0


# -- 2. refresh during a burst --------------------------------------------------------------


async def test_refresh_during_a_burst_opens_the_next_socket_before_the_old_one_closes(sim):
    client = sm_client(sim)
    dispatched = Dispatched(client)
    await asyncio.wait_for(client.connect(), GUARD)
    sim.burst(BURST // 2)
    first_burst = sim.events_dispatched
    await until(lambda: len(dispatched) >= 2_000, "the burst to be under way")
    assert sim.socket_mode_disconnect("refresh_requested", connection=1) == 1
    await connected(client, 2)
    await until(lambda: any(c["connection"] == 1 for c in closes(client)), "connection #1 to close")
    sim.burst(1_000)  # after the handover: all of it on connection 2
    await settled(sim, client, dispatched, "both bursts to be acked and dispatched")
    await client.async_stop()

    rec = assert_delivered(sim, client, dispatched)
    assert [(d["connection"], d["reason"]) for d in sim.socket_mode_disconnects] == [(1, "refresh_requested")]
    assert client.connection_number == 2 and sim.undelivered == []
    # The next socket said hello before the old one closed: the client's
    # close of #1 comes after #2's hello in its record, and says why.
    df = client.events
    hello_2 = df[(df["type"] == "hello") & (df["connection"] == 2)]["seq"].iloc[0]
    close_1 = df[(df["type"] == "close") & (df["connection"] == 1)]["seq"].iloc[0]
    assert hello_2 < close_1
    assert closes(client)[0] == {"type": "close", "connection": 1, "reason": "handed over to connection #2"}
    assert len(rec.by_conn[1]) >= 2_000 and rec.by_conn[2]
    # The refresh came during the burst: envelopes of it were still read after the disconnect.
    told = df.index[(df["type"] == "disconnect") & (df["connection"] == 1)][0]
    assert any(r["index"] > told and r["sim_seq"] <= first_burst for r in rec.rows)


# -- 3. TCP drop mid-burst -----------------------------------------------------------------


async def test_tcp_drop_mid_burst_redeliveries_are_recorded_and_dispatched_once(sim, fast_backoff):
    client = sm_client(sim)
    dispatched = Dispatched(client)
    await asyncio.wait_for(client.connect(), GUARD)
    sim.burst(BURST // 2)
    await until(lambda: len(dispatched) >= 2_000, "the burst to be under way")
    sim.drop_connections()
    await connected(client, 2)
    # The workspace retries what connection 1 carried and nobody acked, ack_timeout after it was written.
    await settled(sim, client, dispatched, "every event to be acked and dispatched after the drop")
    await client.async_stop()

    rec = assert_delivered(sim, client, dispatched, aborted=frozenset({1}), redeliveries=True)
    redelivered = sim.redelivered
    assert redelivered, "the drop left nothing unacked: the test did not test redelivery"
    assert {r["reason"] for r in redelivered} == {"connection_closed"}
    # Every redelivery went out on connection 2 and the client recorded it there.
    on_2 = {r["envelope_id"] for r in rec.by_conn[2]}
    assert {r["envelope_id"] for r in redelivered} <= on_2
    # What the client had already (read on #1, its ack lost with the socket)
    # is a duplicate; the rest is dispatched now, once.
    had = {r["event_id"] for r in rec.by_conn[1]}
    again = [r for r in redelivered if r["event_id"] in had]
    assert again, "every ack of connection 1 reached the workspace: no duplicate to test"
    assert client.duplicates == len(again) == len(rec.repeats())
    # Each duplicate row is the redelivery (retry_attempt >= 1); the first copy was dispatched.
    repeats = rec.repeats()
    assert all(r["retry_attempt"] >= 1 for r in rec.rows if r["index"] in repeats)
    assert closes(client)[0]["connection"] == 1


# -- 4. stalled socket ----------------------------------------------------------------------


async def test_stalled_socket_is_noticed_by_its_ping_and_nothing_is_lost(sim, fast_backoff):
    client = sm_client(sim, ping_interval=0.5)
    dispatched = Dispatched(client)
    await asyncio.wait_for(client.connect(), GUARD)
    sim.burst(2_000)
    await settled(sim, client, dispatched, "the first burst")
    sim.stall()  # no frames, no pongs, no pings, until stall(0)
    first = sim.events_dispatched
    sim.burst(2_000)  # queued behind the stall
    await until(lambda: any(c["connection"] == 1 for c in closes(client)), "the stall to be noticed")
    assert client.state in ("reconnecting", "connecting", "connected")
    sim.stall(0)
    await until(lambda: client.state == "connected" and client.connection_number >= 2, "a new connection")
    await settled(sim, client, dispatched, "the second burst, on the new connection")
    await client.async_stop()

    assert_delivered(sim, client, dispatched)
    reason = closes(client)[0]["reason"]
    assert reason == "connection lost" or reason.startswith(("network", "stale")), reason
    assert sim.events_dispatched == len(events_sent(sim))
    # Nothing was written on the stalled socket: the second burst went out on the next one.
    assert {e["connection"] for e in events_sent(sim) if e["sim_seq"] <= first} == {1}
    assert 1 not in {e["connection"] for e in events_sent(sim) if e["sim_seq"] > first}


# -- 5. bad frames ------------------------------------------------------------------------------

EXPECTED_CODE = {"not_json": "not_json", "array": "not_object", "binary": "not_json", "bad_utf8": "bad_utf8",
                 "nested": "not_json", "no_type": "no_type"}


@pytest.mark.parametrize("kind", list(EXPECTED_CODE))
async def test_bad_frame_on_a_socket_mode_socket_is_an_error_event_and_the_client_goes_on(sim, kind):
    client = sm_client(sim)
    dispatched = Dispatched(client)
    tapped: list[dict] = []
    client.add_tap(lambda e: tapped.append(e) if e.get("type") == "error" else None)
    await asyncio.wait_for(client.connect(), GUARD)
    sim.burst(200)
    sim.send_malformed(kind)
    sim.burst(200)
    await marker(sim, client, f"after {kind}")
    await settled(sim, client, dispatched, "the bursts around the bad frame")
    await client.async_stop()

    assert_delivered(sim, client, dispatched)
    assert client.connection_number == 1
    bad = [e for e in tapped if "raw" in e]
    assert len(bad) == 1, bad
    assert bad[0]["error"]["code"] == EXPECTED_CODE[kind] and bad[0]["error"]["msg"]
    rows = [e["malformed"] for e in errors(client) if "malformed" in e]
    assert rows == [bad[0]["raw"]]


# -- 6. link_disabled ---------------------------------------------------------------------------


async def test_link_disabled_stops_the_client_saying_to_turn_socket_mode_on(sim):
    client = sm_client(sim)
    await asyncio.wait_for(client.connect(), GUARD)
    assert sim.socket_mode_disconnect("link_disabled") == 1
    await until(lambda: client.state == "stopped", "the client to stop")
    calls = len(sim.connections_open_calls)
    await asyncio.sleep(1.0)  # a quiet spell: no reconnect follows
    assert len(sim.connections_open_calls) == calls == 1

    assert isinstance(client.last_error, SocketModeDisabled)
    msg = str(client.last_error)
    assert "link_disabled" in msg and "Socket Mode" in msg and "turn it on" in msg
    errs = [e for e in errors(client) if e.get("error", {}).get("code") == "link_disabled"]
    assert len(errs) == 1 and "turn it on" in errs[0]["error"]["msg"]
    # Connecting again (the person's choice) asks once and is refused with the same advice.
    with pytest.raises(SocketModeConnectError) as info:
        await asyncio.wait_for(client.connect(), GUARD)
    assert info.value.error == "access_denied" and "Turn it on" in str(info.value)
    assert len(sim.connections_open_calls) == 2 and client.state == "stopped"
    await client.async_stop()


# -- 7. too_many_websockets --------------------------------------------------------------------


async def test_too_many_websockets_backs_off_then_connects_when_a_slot_is_free(sim):
    others = [await (await SmSocket.open(sim)).hello() for _ in range(10)]
    assert sim.socket_mode_connections == 10
    before = len(sim.connections_open_calls)
    client = sm_client(sim)
    client.start()
    try:
        await until(lambda: len(sim.connections_open_calls) - before >= 2, "a refusal and a retry")
        await asyncio.sleep(3.0)  # a few seconds of refusals
        calls = len(sim.connections_open_calls) - before
        assert 2 <= calls <= 8, f"{calls} apps.connections.open calls in about 3 s"
        assert client.state != "connected"
        refused = [e for e in errors(client) if e.get("error", {}).get("code") == "socket_refused"]
        assert refused and "too_many_websockets" in refused[0]["error"]["msg"]
        await others.pop().close()  # a slot frees up
        await until(lambda: client.state == "connected", "the client to take the free slot")
        await until(lambda: sim.socket_mode_connections == 10, "nine bare sockets and the client's")
    finally:
        await client.async_stop()
        for sock in others:
            await sock.close()


# -- 8. apps.connections.open errors --------------------------------------------------------------


@pytest.mark.parametrize("case", ["invalid_auth", "not_allowed_token_type"])
async def test_connections_open_refusal_stops_at_once_saying_what_to_do(sim, case):
    app_token = f"xapp-1-{sim.app_id}-1-{secrets.token_hex(32)}" if case == "invalid_auth" else sim.token
    client = sm_client(sim, app_token=app_token)
    with pytest.raises(SocketModeConnectError) as info:
        await asyncio.wait_for(client.connect(), GUARD)
    await asyncio.sleep(0.5)  # a quiet spell: no retry follows
    assert len(sim.connections_open_calls) == 1
    assert client.state == "stopped" and client.last_error is info.value
    assert info.value.error == case
    msg = str(info.value)
    if case == "invalid_auth":
        assert "xapp-" in msg and "App-Level Tokens" in msg
    else:
        assert "xapp-" in msg and "xoxb-" in msg and "token=" in msg
    assert app_token not in msg
    await client.async_stop()


# -- 9. slash commands ----------------------------------------------------------------------------


async def test_slow_slash_command_is_acked_empty_and_answered_at_the_response_url(sim):
    client = sm_client(sim)

    @client.on("/slow")
    async def slow(client, event):
        await asyncio.sleep(ANSWER_DEADLINE + 0.8)
        return "slow answer"

    @client.on("/fast")
    def fast(client, event):
        return {"text": "fast answer"}

    await asyncio.wait_for(client.connect(), GUARD)
    slow_id = sim.slash_command("/slow", "please")
    fast_id = sim.slash_command("/fast", "now")
    fast_ack = await asyncio.to_thread(sim.wait_for_ack, fast_id, GUARD)
    slow_ack = await asyncio.to_thread(sim.wait_for_ack, slow_id, GUARD)
    await until(lambda: any(r["envelope_id"] == slow_id for r in sim.responses), "the answer at the response_url")
    await client.async_stop()

    # The slow one: acked without payload once the deadline passed, in time, then answered at its response_url.
    assert slow_ack["payload"] is None and slow_ack["late"] is False
    assert slow_ack["acked_at"] - slow_ack["sent_at"] >= ANSWER_DEADLINE  # it waited for the handler first
    assert [r["body"] for r in sim.responses if r["envelope_id"] == slow_id] == [{"text": "slow answer"}]
    assert sim.slash_timeouts == []
    # The fast one: the answer is the ack's payload.
    assert fast_ack["payload"] == {"text": "fast answer"} and fast_ack["late"] is False
    answers = [a for a in sim.command_answers if a["envelope_id"] == fast_id]
    assert len(answers) == 1 and answers[0]["text"] == "fast answer"
    assert [a for a in sim.command_answers if a["envelope_id"] == slow_id] == []
    assert [r for r in sim.responses if r["envelope_id"] == fast_id] == []
    assert len([a for a in sim.acks if a["envelope_id"] in (slow_id, fast_id)]) == 2  # one ack each


# -- 10. tokens --------------------------------------------------------------------------------------


async def test_no_token_in_reprs_logs_errors_frame_log_widget_or_recording(sim, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    app_token, bot_token = sim.app_token, sim.token
    wrong_app = f"xapp-1-{sim.app_id}-1-{secrets.token_hex(32)}"
    tokens = [app_token, bot_token, wrong_app]
    record = tmp_path / "events.jsonl"
    found: list = []
    exceptions: list[BaseException] = []

    client = sm_client(sim, record_to=record)
    log = LiveLog(client, widgets=True, interval=0.01)

    @client.on("message")
    def failing(client, event):
        found.append(client.web_client)
        raise RuntimeError(f"handler failed; web client {client.web_client!r}; client {client!r}")

    @client.on("/deploy")
    def deploy(client, event):
        return f"deploying {event['text']}"

    dispatched = Dispatched(client)
    await asyncio.wait_for(client.connect(), GUARD)
    sim.burst(300)
    sim.post_message(human(sim), "general", "hello <b>there</b>")
    await until(lambda: client.handlers["failing"].errors >= 1, "the failing handler")
    deploy_id = sim.slash_command("/deploy", "v2")
    await asyncio.to_thread(sim.wait_for_ack, deploy_id, GUARD)
    found.append(await client.web_client.auth_test())
    found.append(await asyncio.wait_for(client.send_message(general(sim), "from the bot"), GUARD))
    sim.send_malformed("not_json")
    sim.drop_connections()  # an error and a reconnect
    await connected(client, 2)
    await settled(sim, client, dispatched, "the traffic")
    log.flush()
    html = log.widget.children[0].value + log._rows_html.value
    found.append(repr(client))
    await client.async_stop()
    log.flush()
    html += log.widget.children[0].value + log._rows_html.value

    # the refusals: a wrong app token, and the bot token passed as the app token
    refused = []
    for bad_app in (wrong_app, bot_token):
        bad = sm_client(sim, app_token=bad_app)
        with pytest.raises(SocketModeConnectError) as info:
            await asyncio.wait_for(bad.connect(), GUARD)
        exceptions.append(info.value)
        await bad.async_stop()
        refused.append(bad)

    roots = [client, log, client.handlers, client.event_frame, found, exceptions, *refused]
    rendered = []
    for obj in reachable(roots):
        rendered += [repr(obj), str(obj)]
    assert len(rendered) > 40  # the walk really reached the objects
    rendered.append(client.handlers["failing"].last_error)
    for exc in exceptions:
        rendered.append("".join(traceback.format_exception(exc)))
    for rec in caplog.records:
        rendered.append(logging.Formatter().format(rec))
    for frame in [client.events] + [b.events for b in refused]:
        for column in frame.columns:
            rendered.extend(frame[column].astype("string").fillna("").tolist())
    rendered += [html, log.text(200), log.status_html(), record.read_text()]
    assert len(caplog.records) > 20 and any(r.levelno == logging.DEBUG for r in caplog.records)
    assert record.stat().st_size > 0 and "apps.connections.open" in "\n".join(
        logging.Formatter().format(r) for r in caplog.records)

    blob = "\n".join(rendered)
    for token in tokens:
        assert token not in blob, f"a token leaked ({token[:5]}…)"
        assert token[-16:] not in blob  # nor a recognisable part of it
    log.close()
