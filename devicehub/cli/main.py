"""
C{devicehub}: the operators' command-line client of the broker frontend.

Prints one JSON line and exits with a code scripts can branch on:
0 ok, 1 no (not online), 2 timeout, 3 broker unavailable, 4 busy, 64 a usage or
configuration mistake (then nothing on stdout and one line on stderr).
"""

import sys
from typing import NoReturn

from twisted.internet import task
from twisted.internet.defer import Deferred

from devicehub.cli.arguments import UsageError, parse
from devicehub.cli.commands import follow, makeKeys, run, runSimulation
from devicehub.common.jsoncodec import dumps

EXIT_USAGE = 64


def _fail(error: UsageError) -> NoReturn:
    sys.stderr.write(f"{error}\n")
    sys.stderr.flush()
    raise SystemExit(EXIT_USAGE)


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point of the C{devicehub} console script."""
    try:
        arguments = parse(argv)
        if arguments.verb == "keygen":
            sys.stdout.write(dumps(makeKeys(arguments)).decode() + "\n")
            raise SystemExit(0)
    except UsageError as e:
        _fail(e)

    async def react(reactor) -> None:
        try:
            if arguments.verb == "events":
                await follow(reactor, arguments)
                return
            if arguments.verb == "simulate":
                code, output = await runSimulation(reactor, arguments)
                sys.stdout.write(dumps(output).decode() + "\n")
                sys.stdout.flush()
                raise SystemExit(code)
            code, output = await run(reactor, arguments)
        except UsageError as e:
            _fail(e)
        sys.stdout.write(dumps(output).decode() + "\n")
        sys.stdout.flush()
        raise SystemExit(code)

    task.react(lambda reactor: Deferred.fromCoroutine(react(reactor)))


if __name__ == "__main__":
    main()
