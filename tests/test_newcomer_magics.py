"""Issue 14: what a newcomer meets in the magics, through a real IPython shell
against the simulated workspace (no token set, so ``%rtm_connect`` uses it).

Cells run as ipykernel runs them (``run_cell_async`` on the test's running
loop, which keeps running between cells), except where a test says otherwise.
"""

from __future__ import annotations

import asyncio

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from rtm_notebook.notebook import magics
from rtm_notebook.notebook.magics import session


async def run(shell: InteractiveShell, cell: str, **kwargs):
    return await shell.run_cell_async(cell, transformed_cell=shell.transform_cell(cell), **kwargs)


async def ok(shell: InteractiveShell, cell: str, **kwargs):
    result = await run(shell, cell, **kwargs)
    assert result.success, (cell, result.error_before_exec or result.error_in_exec)
    return result


async def wait_until(predicate, timeout: float = 15.0) -> None:
    """Hang guard only: poll until ``predicate()`` is true."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def connected(client) -> None:
    async with asyncio.timeout(15):
        await client.connect()
        while not client.user_names or not client.channel_names:
            await asyncio.sleep(0.01)


async def stop_all(shell: InteractiveShell) -> None:
    await ok(shell, "%rtm_stop")
    await asyncio.gather(*list(magics._pending))


def human_and_channel(sim) -> tuple[str, str]:
    human = next(u["id"] for u in sim.users if not u["is_bot"])
    channel = next(c["id"] for c in sim.channels if c["is_member"])
    return human, channel


# -- item 8: a syntax error in a %%rtm_on body ------------------------------------------


async def test_syntax_error_in_a_handler_body_shows_the_cells_line_only(capsys, shell):
    await ok(shell, "%rtm_connect --demo --rate 0", store_history=True)
    await connected(shell.user_ns["rtm"])
    await ok(shell, "x = 1", store_history=True)
    capsys.readouterr()
    cell = "%%rtm_on message --name broken\nx = 1\nsay('hi'\n"
    result = await run(shell, cell, store_history=True)
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
    shown = capsys.readouterr()
    text = shown.out + shown.err
    assert f"Cell In[{result.execution_count}], line 3" in text, text
    assert "say('hi'" in text and "was never closed" in text
    for internal in ("magics.py", "ast.py", "interactiveshell.py", "Traceback", "compile_handler"):
        assert internal not in text, text
    assert "broken" not in shell.user_ns["rtm"].handlers
    await stop_all(shell)


async def test_a_handlers_runtime_traceback_names_its_cell_and_line(shell):
    await ok(shell, "%rtm_connect --demo --rate 0", store_history=True)
    client = shell.user_ns["rtm"]
    await connected(client)
    result = await ok(shell, "%%rtm_on message --name fails\nx = 1\n1 / 0\n", store_history=True)
    human, channel = human_and_channel(session().sim)
    session().sim.post_message(human, channel, "boom")
    await wait_until(lambda: client.handlers["fails"].errors == 1)
    events = client.events
    tb = events[(events["type"] == "error")]["raw"].iloc[-1]
    assert f"ipython-input-{result.execution_count}-" in tb and "line 3" in tb, tb
    await stop_all(shell)


# -- item 9: usage lines and event-name suggestions ---------------------------------------


def usage_error(shell: InteractiveShell, cell: str) -> str:
    result = shell.run_cell(cell)
    assert isinstance(result.error_in_exec, UsageError), (cell, result.error_in_exec)
    return str(result.error_in_exec)


@pytest.mark.parametrize(("cell", "says", "usage"), [
    ("%rtm_on", "the following arguments are required: event",
     "%rtm_on EVENT [FUNCTION] [--match REGEX] [--channel C] [--subtype S] [--name NAME]"),
    ("%rtm_on message --bogus", "unrecognized arguments: --bogus", "%rtm_on EVENT [FUNCTION]"),
    ("%rtm_connect --dmeo", "Did you mean --demo?", "%rtm_connect [--demo]"),
    ("%rtm_off a b", "unrecognized arguments: b", "%rtm_off [NAME] [--all]"),
    ("%rtm_log -n many", "invalid int value: 'many'", "%rtm_log [-n N]"),
    ("%rtm_stop a b", "unrecognized arguments: b", "%rtm_stop [NAME]"),
    ("%rtm_handlers extra", "takes no arguments", "%rtm_handlers"),
    ("%rtm_status extra", "takes no arguments", "%rtm_status"),
])
def test_every_magic_with_bad_arguments_says_what_to_type(shell, cell, says, usage):
    message = usage_error(shell, cell)
    assert says in message, message
    assert "::" not in message and "usage:" not in message, message
    typed = [line for line in message.splitlines() if line.startswith("Type: ")]
    assert len(typed) == 1, message
    assert typed[0].startswith("Type: " + usage), message


def test_unknown_event_suggests_only_close_names(shell):
    message = usage_error(shell, "%%rtm_on mesage\npass")
    assert "Did you mean 'message'?" in message
    message = usage_error(shell, "%%rtm_on reaction_add\npass")
    assert "Did you mean 'reaction_added'?" in message
    message = usage_error(shell, "%%rtm_on nosuchevent\npass")
    assert "Did you mean" not in message and "group_archive" not in message, message
    assert "message" in message and "reaction_added" in message and "*" in message
