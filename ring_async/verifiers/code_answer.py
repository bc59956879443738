"""The program in a code response: the last fenced code block of the final answer.

Same final-answer rule as math: only the text after the last ``</think>`` counts, and a think block that never
closes means no answer. Within it, the last fenced block (```` ```lang ... ``` ````) whose language tag fits the
task's language, or has no tag, is the program. No such block means there is no program (``compile_error``).
"""

from __future__ import annotations

import re

from ring_async.verifiers.math_answer import final_section

LANG_TAGS = {
    "python": {"", "python", "py", "python3"},
    "cpp": {"", "cpp", "c++", "cc", "cxx"},
}
_FENCE = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9+#_-]*)[^\n]*\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)


def extract_program(response: str, lang: str) -> tuple[str | None, str]:
    """(program, reason): the program text, or None and why there is none."""
    section = final_section(response)
    if section is None:
        return None, "no_final_answer"
    tags = LANG_TAGS.get(lang, {""})
    blocks = [m.group(2) for m in _FENCE.finditer(section) if m.group(1).lower() in tags]
    if not blocks:
        return None, "no_code_block"
    program = blocks[-1]
    if not program.strip():
        return None, "empty_code_block"
    return program, ""
