"""The README's examples run as written from a clone: the files they name are shipped, and the
`send` examples print what the README shows."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import click
import pytest

from paths import ROOT

README = (ROOT / "README.md").read_text()
# `.venv/bin/batched-event-api` as typed: the console script's argv[0], on this interpreter and source.
AS_TYPED = [
    sys.executable,
    "-c",
    "import sys; from batched_event_api.cli.main import main; sys.argv[0] = '.venv/bin/batched-event-api'; main()",
]


def test_every_file_the_readme_names_under_examples_is_shipped():
    named = set(re.findall(r"examples/[\w.-]+\.ndjson", README))
    assert named and all((ROOT / path).is_file() for path in named), sorted(
        p for p in named if not (ROOT / p).is_file()
    )


def console_runs() -> dict[str, list[str]]:
    """Each `$ .venv/bin/batched-event-api …` command of the README's console blocks, by its text,
    with the lines it prints (up to the next `$`)."""
    runs: dict[str, list[str]] = {}
    for block in re.findall(r"```console\n(.*?)```", README, re.S):
        command = None
        for line in block.replace("\\\n    ", "").splitlines():
            if line.startswith("$ "):
                command = line[2:]
                runs[command] = []
            elif command is not None:
                runs[command].append(line)
    return runs


def run_as_typed(command: str, url: str) -> subprocess.CompletedProcess:
    args = command.replace("http://127.0.0.1:8080", url).split()
    assert args[0] == ".venv/bin/batched-event-api"
    return subprocess.run([*AS_TYPED, *args[1:]], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_failing_send_example_prints_what_the_readme_shows(server_factory):
    server = server_factory()
    runs = console_runs()
    command = next(c for c in runs if "events-with-typo" in c)
    result = run_as_typed(command, server.url)
    assert result.returncode == int(runs["echo $?"][0])
    prefix = result.stderr.split("idempotency key prefix: ", 1)[1].split()[0]
    shown = "\n".join(runs[command]).replace("81d0c5f2e6aa", prefix).replace("http://127.0.0.1:8080", server.url)
    assert result.stdout == "" and result.stderr == shown + "\n"
    assert server.stop() == 0


def test_the_successful_send_example_prints_what_the_readme_shows(server_factory):
    server = server_factory()
    command = next(c for c in console_runs() if "initial-dataset-02" in c)
    shown = console_runs()[command]
    result = run_as_typed(command, server.url)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("idempotency key prefix: ")
    # The figures of time and rate differ from run to run; the rest is as shown.
    figures = re.compile(r"in [0-9.]+s, [0-9,]+ events/s")
    assert figures.sub("", result.stdout.strip()) == figures.sub("", shown[1])
    assert server.stop() == 0


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's example uses curl")
def test_the_curl_example_answers_what_the_readme_shows(server_factory):
    server = server_factory()
    block = re.search(r"```sh\n(curl .*?)```", README, re.S).group(1)  # type: ignore[union-attr]
    command, shown = block.split("\n# ")
    result = subprocess.run(
        ["sh", "-c", command.replace("http://127.0.0.1:8080", server.url)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stdout == shown.strip(), result.stderr
    assert server.stop() == 0


def readme_defaults() -> dict[str, str]:
    """Each option of the README's option tables with the default its row states, as written
    (a row of two options, `--a` / `--b`, states two defaults the same way)."""
    stated = {}
    for row in re.findall(r"^\| (`-.*?) \| .*? \| (.*?) \| ", README, re.M):
        options = [re.findall(r"--[\w-]+", name)[0] for name in row[0].split(" / ")]
        defaults = row[1].split(" / ")
        if len(defaults) == len(options):
            stated.update(zip(options, (d.strip("`") for d in defaults), strict=True))
    return stated


def test_the_readme_states_the_defaults_the_command_line_has():
    from batched_event_api.cli.main import main
    from batched_event_api.config import STATE_DIR

    stated = readme_defaults()
    shown = {}
    for command in ("serve", "send"):
        for param in main.commands[command].params:
            if isinstance(param, click.Option) and param.default is not None:
                long = next(o for o in param.opts if o.startswith("--"))
                if param.is_flag:
                    shown[long] = "on" if param.default else "off"
                else:
                    shown[long] = ", ".join(param.default) if param.multiple else str(param.default)
    assert len(stated.keys() & shown.keys()) >= 39  # all but --key-prefix and --state-dir (None: said in the help)
    assert stated["--state-dir"] == STATE_DIR
    assert {o: stated[o] for o in stated if o in shown} == {o: shown[o] for o in stated if o in shown}
