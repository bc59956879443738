import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ring_async.config import load_config
from ring_async.errors import RingAsyncError
from ring_async.tasks.answers import boxed_matches, extract_boxed
from ring_async.tasks.code_tasks import CODE_LEVELS, ENTRY, code_task
from ring_async.tasks.dataset import load_splits, synthetic_splits
from ring_async.tasks.errors import TaskFormatError
from ring_async.tasks.io import read_tasks, write_tasks
from ring_async.tasks.math_tasks import INSTRUCTION, MATH_LEVELS, math_task
from ring_async.tasks.record import TaskRecord
from ring_async.tasks.splits import TaskGenerationError, split_key, synthesize


def _tasks(n=40, seed=0):
    rng = random.Random(seed)
    out = []
    for level in MATH_LEVELS:
        out += [math_task(rng, level, linear_fraction=0.3) for _ in range(n // 5)]
    for level in CODE_LEVELS:
        out += [code_task(rng, level) for _ in range(n // 3)]
    return out


def test_math_prompts_end_with_the_instruction_and_teacher_answers_are_right():
    for task in _tasks(200):
        if task.reward_type != "math":
            continue
        assert task.prompt.endswith(INSTRUCTION)
        assert task.response.startswith("<think>\n") and "\n</think>\n" in task.response
        assert extract_boxed(task.response) == task.answer  # what the math verifier reads
        assert boxed_matches(task.response, task.answer)
        expression = task.metadata["split_key"].removeprefix("math:")
        if task.metadata["kind"] == "arithmetic":
            assert eval(expression) == int(task.answer)  # our own generated integer expression
        else:
            lhs, rhs = expression.split(" = ")
            a, b = lhs.split("x + ")
            assert int(a) * int(task.answer) + int(b) == int(rhs)


def test_code_teacher_solutions_pass_their_hidden_tests():
    for task in _tasks(300):
        if task.reward_type != "code":
            continue
        tests = task.tests
        assert tests["mode"] == "function" and tests["entry"] == ENTRY and len(tests["cases"]) >= 3
        assert json.loads(json.dumps(tests)) == tests  # the sandbox receives it as JSON
        code = task.response.split("```python\n", 1)[1].rsplit("```", 1)[0]
        namespace: dict = {}
        exec(code, namespace)  # trusted: the teacher code comes from our own templates
        for case in tests["cases"]:
            assert namespace[ENTRY](*case["args"]) == case["expected"], (task.prompt, case)


def test_difficulty_and_seed_knobs():
    a = synthetic_splits(load_config().tasks.model_copy(update={"math_train": 50, "math_heldout": 10}), seed=1)
    b = synthetic_splits(load_config().tasks.model_copy(update={"math_train": 50, "math_heldout": 10}), seed=1)
    c = synthetic_splits(load_config().tasks.model_copy(update={"math_train": 50, "math_heldout": 10}), seed=2)
    assert [r.prompt for r in a.train] == [r.prompt for r in b.train]
    assert [r.prompt for r in a.train] != [r.prompt for r in c.train]
    rng = random.Random(0)
    easy = [math_task(rng, 1) for _ in range(50)]
    hard = [math_task(rng, 5) for _ in range(50)]
    assert max(t.response.count("\n") for t in easy) < min(t.response.count("\n") for t in hard)


def test_train_and_heldout_never_overlap():
    tasks = load_config().tasks.model_copy(update={"math_train": 1500, "math_heldout": 100, "math_difficulty": 1,
                                                   "code_train": 300, "code_heldout": 30, "code_difficulty": 3})
    for seed in (0, 1):
        splits = synthetic_splits(tasks, seed)
        assert len(splits.train) == 1800 and len(splits.heldout) == 130
        assert not {r.prompt for r in splits.train} & {r.prompt for r in splits.heldout}
        assert not {split_key(r) for r in splits.train} & {split_key(r) for r in splits.heldout}
    # Across seeds too: a problem's split depends on its content only.
    other = synthetic_splits(tasks, 2)
    assert not {split_key(r) for r in splits.train} & {split_key(r) for r in other.heldout}


def test_asking_for_more_problems_than_exist_is_a_clear_error():
    with pytest.raises(TaskGenerationError, match="distinct math tasks exist"):
        synthesize(lambda rng: math_task(rng, 1), 100_000, 10, "s", 0.2, "math tasks")


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_files_round_trip(tmp_path, suffix):
    records = _tasks(30)
    path = write_tasks(records, tmp_path / f"tasks{suffix}")
    assert read_tasks(path) == records


def test_users_hand_written_jsonl_reads(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(
        '{"prompt": "What is 2 + 2?", "answer": 4, "reward_type": "math"}\n\n'
        '{"prompt": "Write f(x) returning x.", "reward_type": "code", "metadata": {"source": "me"},'
        ' "tests": "{\\"mode\\": \\"function\\", \\"entry\\": \\"f\\", \\"cases\\": [{\\"args\\": [1], \\"expected\\": 1}]}"}\n'
    )
    math, code = read_tasks(path)
    assert math.answer == "4" and math.id and math.response is None
    assert code.tests["entry"] == "f" and code.metadata == {"source": "me"}
    prompt = code.to_prompt()
    assert json.loads(prompt.tests)["cases"][0]["expected"] == 1 and prompt.prompt_id == code.id


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "x", "answer": "1", "reward_type": "math"', r"bad\.jsonl:3: invalid JSON"),
        ('{"prompt": "x", "reward_type": "math"}', r"bad\.jsonl:3: a 'math' task needs 'answer'"),
        ('{"prompt": "x", "reward_type": "chess", "answer": "1"}', r"bad\.jsonl:3: 'reward_type' must be one of"),
        ('{"prompt": "", "reward_type": "math", "answer": "1"}', r"bad\.jsonl:3: 'prompt' must be a non-empty"),
        ('{"prompt": "x", "reward_type": "code", "tests": {"mode": "function", "entry": "f", "cases": []}}',
         r"bad\.jsonl:3: invalid 'tests': tests\.cases: must be a non-empty list"),
        ('{"prompt": "x", "reward_type": "code", "tests": "{\\"mode\\": \\"fn\\", \\"cases\\": [1]}"}',
         r"bad\.jsonl:3: invalid 'tests': tests\.mode"),
        ('{"prompt": "x", "reward_type": "math", "answer": "1", "colour": "red"}', r"bad\.jsonl:3: unknown field"),
        ('[1, 2]', r"bad\.jsonl:3: a record must be an object"),
    ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    good = '{"prompt": "ok", "answer": "1", "reward_type": "math"}'
    path.write_text(f"{good}\n{good}\n{line}\n{good}\n")
    with pytest.raises(TaskFormatError, match=message) as info:
        read_tasks(path)
    assert isinstance(info.value, RingAsyncError) and str(path) in str(info.value)


def test_malformed_parquet_names_file_and_row(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b"], "reward_type": ["math", "math"], "answer": ["1", None]}), path)
    with pytest.raises(TaskFormatError, match=r"bad\.parquet: row 2: a 'math' task needs 'answer'"):
        read_tasks(path)
    pq.write_table(pa.table({"question": ["a"]}), path)
    with pytest.raises(TaskFormatError, match=r"bad\.parquet: no 'prompt' column"):
        read_tasks(path)
    path.write_text("not parquet")
    with pytest.raises(TaskFormatError, match=r"bad\.parquet: not a readable Parquet file"):
        read_tasks(path)
    with pytest.raises(TaskFormatError, match=r"tasks\.csv: unknown task file type"):
        read_tasks(tmp_path / "tasks.csv")


def test_user_files_split_without_overlap(tmp_path):
    records = [TaskRecord(f"What is {i} + 1?", "math", answer=str(i + 1)) for i in range(200)]
    train_path = write_tasks(records, tmp_path / "train.jsonl")
    config = load_config(overrides={"tasks.train_files": [str(train_path)], "cache.dir": str(tmp_path / "cache")})
    splits = load_splits(config)
    assert len(splits.train) + len(splits.heldout) == 200 and splits.heldout
    assert not {r.prompt for r in splits.train} & {r.prompt for r in splits.heldout}
    heldout_path = write_tasks(records[:20], tmp_path / "heldout.parquet")
    config = load_config(overrides={"tasks.train_files": [str(train_path)], "tasks.heldout_files": [str(heldout_path)]})
    splits = load_splits(config)
    assert len(splits.heldout) == 20 and len(splits.train) == 180


def test_boxed_extraction():
    assert extract_boxed("so \\boxed{-3}") == "-3"
    assert extract_boxed("<think>\\boxed{1}</think>\nThe answer is \\boxed{7}.") == "7"
    assert extract_boxed("no box") is None
    assert boxed_matches("The answer is \\boxed{ - 5 }.", "-5")
    assert not boxed_matches("\\boxed{15}", "5")
