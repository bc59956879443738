"""SubmitPrompts requests checked whole and turned into the broker's prompts.

Nothing is queued unless every prompt is valid, so the caller can fix its request and send it again without working
out which prompts already went in. The checks are those the rest of the system would otherwise fail on later, far
from the caller: a math prompt without its reference answer, code tests the verifier cannot parse, metadata that is
not a msgpack map (the generator merges it into every rollout's metadata map).
"""

from __future__ import annotations

from ring_async.broker.prompts import Prompt
from ring_async.control.errors import ControlRequestError
from ring_async.v1 import control_pb2
from ring_async.verifiers.core import REWARD_TYPES
from ring_async.verifiers.errors import VerifierError
from ring_async.verifiers.service import metadata_map
from ring_async.verifiers.tests_format import parse_tests

# A group is sampled and scored as one unit and holds a generator until all of it is done: a typo like 100000 would
# hold one for hours, so larger groups are refused rather than queued.
MAX_GROUP_SIZE = 1024


def prompts_from_request(request: control_pb2.SubmitPromptsRequest) -> list[Prompt]:
    """The broker prompts of ``request``, in order; ControlRequestError naming the first bad prompt."""
    if not request.prompts:
        raise ControlRequestError("prompts: at least one prompt is needed")
    try:
        prompts = [_prompt(index, message) for index, message in enumerate(request.prompts)]
    except VerifierError as err:  # from the verifier's own parsers, which name the field already
        raise ControlRequestError(str(err)) from None
    seen: set[str] = set()
    for index, prompt in enumerate(prompts):
        if prompt.prompt_id and prompt.prompt_id in seen:
            raise ControlRequestError(f"prompts[{index}].prompt_id: {prompt.prompt_id!r} is given more than once")
        seen.add(prompt.prompt_id)
    return prompts


def _prompt(index: int, message: control_pb2.Prompt) -> Prompt:
    prompt_id = message.prompt_id if message.HasField("prompt_id") else ""
    where = f"prompts[{index}]" + (f" ({prompt_id!r})" if prompt_id else "")
    if not message.text.strip():
        raise ControlRequestError(f"{where}.text: must not be empty")
    if message.reward_type not in REWARD_TYPES:
        raise ControlRequestError(f"{where}.reward_type: must be one of {', '.join(REWARD_TYPES)}, "
                                  f"got {message.reward_type!r}")
    answer = message.answer if message.HasField("answer") else None
    tests = message.tests if message.HasField("tests") else None
    if message.reward_type == "math" and not (answer and answer.strip()):
        raise ControlRequestError(f"{where}.answer: a math prompt needs its reference answer")
    if message.reward_type == "code":
        if not tests:
            raise ControlRequestError(f"{where}.tests: a code prompt needs its tests (a JSON object)")
        parse_tests(tests, where=f"{where}.tests")
    if message.metadata:
        metadata_map(message.metadata, f"{where}.metadata")
    if message.group_size > MAX_GROUP_SIZE:
        raise ControlRequestError(f"{where}.group_size: at most {MAX_GROUP_SIZE}, got {message.group_size}")
    return Prompt(
        prompt_id=prompt_id,
        prompt=message.text,
        reward_type=message.reward_type,
        answer=answer,
        tests=tests,
        priority=message.priority,
        group_size=message.group_size or None,  # 0: the configured broker.group_size
        metadata=message.metadata or None,
    )

