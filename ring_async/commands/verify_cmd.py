"""``ring-async verify math|code``: one verdict, printed as one JSON object, for people debugging rewards.

    ring-async verify math --gold '\\frac{1}{2}' --response 'so the answer is \\boxed{0.5}'
    ring-async verify code --program sol.py --tests tests.json [--lang python|cpp]

Exit 0 whenever a verdict was reached (whatever it is); exit 2 with one line on stderr for bad arguments (a missing
file, a tests file that does not follow the format, an unknown language).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ring_async.verifiers.errors import VerifierError


def _read_text(value: str, what: str) -> str:
    """``@path`` (or ``-`` for stdin) reads a file; anything else is the text itself."""
    if value == "-":
        return sys.stdin.read()
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise VerifierError(f"{what} {value[1:]}: cannot read ({getattr(err, 'strerror', None) or err})") \
                from None
    return value


def _math(args: argparse.Namespace) -> int:
    from ring_async.verifiers.math_checker import MathChecker

    gold = _read_text(args.gold, "--gold")
    response = _read_text(args.response, "--response")
    with MathChecker(workers=1, deadline_s=args.deadline, prescreen=not args.no_prescreen) as checker:
        result = checker.check(gold, response)
    print(json.dumps(result.to_json(), ensure_ascii=False))
    return 0


def _code(args: argparse.Namespace) -> int:
    from ring_async.verifiers.sandbox import CodeJudge
    from ring_async.verifiers.tests_format import load_tests_file

    try:
        source = Path(args.program).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise VerifierError(f"--program {args.program}: cannot read ({getattr(err, 'strerror', None) or err})") \
            from None
    tests = load_tests_file(args.tests)
    lang = args.lang or tests.lang or ("cpp" if Path(args.program).suffix in (".cpp", ".cc", ".cxx") else "python")
    with CodeJudge(pool_size=1) as judge:
        result = judge.judge(source, tests, lang)
    print(json.dumps(result.to_json(), ensure_ascii=False))
    return 0


def _usage_error(func):  # type: ignore[no-untyped-def]
    """Bad arguments are usage errors (exit 2, one line), like argparse's own."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except VerifierError as err:
            sys.stderr.write(f"ring-async verify: error: {err}\n")
            return 2

    return run


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    verify = subparsers.add_parser("verify", help="score one math answer or one program (prints one JSON object)")
    kinds = verify.add_subparsers(dest="verify_kind", metavar="KIND", parser_class=type(verify))
    kinds.required = True

    math = kinds.add_parser("math", help="check a response's final \\boxed{} answer against a gold answer")
    math.add_argument("--gold", required=True, help="the gold answer (text, @FILE, or - for stdin)")
    math.add_argument("--response", required=True, help="the response (text, @FILE, or - for stdin)")
    math.add_argument("--deadline", type=float, default=1.5, help="hard deadline of the check in seconds")
    math.add_argument("--no-prescreen", action="store_true", help="skip the explosive-input pre-screen")
    math.set_defaults(func=_usage_error(_math))

    code = kinds.add_parser("code", help="run a program against a tests file in the sandbox")
    code.add_argument("--program", required=True, help="the program's source file")
    code.add_argument("--tests", required=True, help="tests file (JSON; format in docs/verifiers.md)")
    code.add_argument("--lang", choices=("python", "cpp"), help="default: the tests file's lang, else by extension")
    code.set_defaults(func=_usage_error(_code))
