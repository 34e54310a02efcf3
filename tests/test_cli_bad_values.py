"""Every command, given a bad value for any flag it checks, exits 2 with one line on stderr and no traceback
(README: bad input is one line and exit status 2; anything else is a bug). One row per checked flag, each
refused before the work starts: argparse types for a flag's syntax and bounds, UserErrors for what needs a
file or the model (the bundled teacher, which loads in a fraction of a second)."""

from __future__ import annotations

import shutil

import pytest

from paths import find_reference
from shallowpi import cli
from shallowpi.study.pipeline import bundled_teacher_path

# {teacher}: the bundled teacher (read only); {out}: an output path that must not appear; {taken}: an existing
# non-empty folder, {file} the file in it; {missing}: a path that does not exist; {dataset}: a copy of LeRobot's
# small v3.0 sample.
TRAIN = ["--dataset", "synthetic:4", "--steps", "1", "--out", "{out}", "--no-progress", "--num-workers", "0"]
DISTILL = ["distill", "--teacher", "{teacher}", "--depth", "6", *TRAIN]
COLLECT = ["collect", "--env", "metaworld", "--tasks", "reach", "--demos-per-task", "1", "--workers", "1"]
COLLECT += ["--no-progress", "--out", "{out}"]
EVAL = ["eval", "--policy", "{teacher}", "--tasks", "reach", "--episodes-per-task", "1", "--workers", "1"]
EVAL += ["--no-progress", "--out", "{out}"]
BENCH = ["bench", "--preset", "tiny", "--out", "{out}"]
SERVE = ["serve", "--policy", "{teacher}", "--port", "0"]
EXPORT = ["export", "--policy", "{teacher}", "--out", "{out}"]
DEMO = ["demo", "--quick", "--out", "{out}"]
TO_LEROBOT = ["to-lerobot", "--policy", "{teacher}", "--out", "{out}"]

CASES: list[tuple[list[str], str]] = [
    # inspect
    (["inspect", "--policy", "{missing}"], "no config.json"),
    # collect
    ([*COLLECT, "--env", "nope"], "argument --env: invalid choice: 'nope'"),
    ([*COLLECT, "--tasks", "nope"], "unknown Meta-World task 'nope'"),
    ([*COLLECT, "--demos-per-task", "0"], "demos-per-task must be >= 1"),
    ([*COLLECT, "--task-demos", "reach-v3"], "--task-demos entry 'reach-v3' is not TASK=N"),
    ([*COLLECT, "--task-demos", "push-v3=5"], "task-demos names 'push-v3', which is not among --tasks"),
    ([*COLLECT, "--task-demos", "reach-v3=0"], "task-demos for reach-v3 must be >= 1"),
    ([*COLLECT, "--task-demos", "reach=2,reach-v3=3"], "--task-demos names reach-v3 twice"),
    ([*COLLECT, "--task-demos", "fly=2"], "unknown Meta-World task 'fly'"),
    ([*COLLECT, "--task-demos", "mt10=2"], "--task-demos entry 'mt10=2' names 10 tasks"),
    ([*COLLECT, "--seed", "-1"], "seed must be >= 0"),
    ([*COLLECT, "--image-size", "0"], "image-size must be >= 1"),
    ([*COLLECT, "--cameras", "corner4,nope"], "unknown Meta-World camera 'nope'"),
    ([*COLLECT, "--state", "nope"], "argument --state: invalid choice"),
    ([*COLLECT, "--max-steps", "501"], "max-steps must be in [1, 500]"),
    ([*COLLECT, "--extra-steps", "-1"], "extra-steps must be >= 0"),
    ([*COLLECT, "--workers", "0"], "workers must be >= 1"),
    ([*COLLECT, "--codec", "nope"], "argument --codec: invalid choice"),
    ([*COLLECT, "--out", "{taken}"], "already exists"),
    # compute-stats
    (["compute-stats", "--dataset", "{missing}"], "not a LeRobotDataset"),
    (["compute-stats", "--dataset", "{dataset}", "--features", "nope"], "unknown feature 'nope'"),
    # train, and the training flags distill shares
    (["train", "--preset", "nope", *TRAIN], "unknown preset 'nope'"),
    (["train", "--init", "{missing}", *TRAIN], "no config.json"),
    (["train", "--init", "{teacher}", "--variant", "pi0", *TRAIN], "--variant / --depth go with --preset"),
    (["train", "--preset", "tiny", "--variant", "nope", *TRAIN], "argument --variant: invalid choice"),
    (["train", "--preset", "tiny", "--depth", "0", *TRAIN], "argument --depth: must be >= 1"),
    (["train", "--preset", "tiny", "--dataset-stats", *TRAIN], "--dataset-stats goes with --init"),
    (["train", "--preset", "tiny", *TRAIN, "--dataset", "synthetic:x"], "expected synthetic:N"),
    (["train", "--preset", "tiny", *TRAIN, "--dataset", "{missing}"], "no such folder"),
    (["train", "--preset", "tiny", *TRAIN, "--out", "{file}"], "--out {file}: exists and is not a folder"),
    (["train", "--preset", "tiny", *TRAIN, "--resume"], "--resume: no checkpoint"),
    (["train", "--preset", "tiny", *TRAIN, "--fsdp"], "--fsdp needs several processes"),
    (
        ["train", "--preset", "tiny", *TRAIN, "--dataset", "{dataset}", "--tokenizer", "{missing}"],
        "--tokenizer: file not found",
    ),
    (["train", "--preset", "tiny", *TRAIN, "--steps", "abc"], "argument --steps: invalid int value: 'abc'"),
    (["train", "--preset", "tiny", *TRAIN, "--steps", "0"], "steps must be >= 1, got 0"),
    (["train", "--preset", "tiny", *TRAIN, "--batch-size", "0"], "batch_size must be >= 1"),
    (["train", "--preset", "tiny", *TRAIN, "--grad-accum", "0"], "grad_accum must be >= 1"),
    (["train", "--preset", "tiny", *TRAIN, "--seed", "-1"], "argument --seed: must be >= 0"),
    (["train", "--preset", "tiny", *TRAIN, "--lr", "-1"], "peak_lr (--lr) must be a finite number > 0"),
    (["train", "--preset", "tiny", *TRAIN, "--lr", "nan"], "peak_lr (--lr) must be a finite number > 0"),
    (["train", "--preset", "tiny", *TRAIN, "--end-lr", "-1"], "end_lr (--end-lr) must be"),
    (["train", "--preset", "tiny", *TRAIN, "--warmup-steps", "-1"], "warmup_steps (--warmup-steps) must be"),
    (["train", "--preset", "tiny", *TRAIN, "--decay-steps", "0"], "decay_steps (--decay-steps) must be"),
    (["train", "--preset", "tiny", *TRAIN, "--weight-decay", "-1"], "weight_decay must be a finite number"),
    (
        ["train", "--preset", "tiny", *TRAIN, "--clip-grad-norm", "0"],
        "clip_grad_norm must be a finite number",
    ),
    (["train", "--preset", "tiny", *TRAIN, "--save-every", "0"], "save_every must be >= 1"),
    (["train", "--preset", "tiny", *TRAIN, "--log-every", "0"], "log_every must be >= 1"),
    (["train", "--preset", "tiny", *TRAIN, "--num-workers", "-1"], "num_workers must be >= 0"),
    (["train", "--preset", "tiny", *TRAIN, "--device", "foo"], "--device 'foo' is not a torch device"),
    (["train", "--preset", "tiny", *TRAIN, "--device", "cuda:99"], "--device 'cuda:99'"),
    (["train", "--preset", "tiny", *TRAIN, "--threads", "0"], "argument --threads: must be >= 1"),
    (["train", "--preset", "tiny", *TRAIN, "--camera-map", "foo"], "bad --camera-map entry 'foo'"),
    # distill
    ([*DISTILL, "--teacher", "{missing}"], "no config.json"),
    ([*DISTILL, "--depth", "0"], "argument --depth: must be >= 1"),
    ([*DISTILL, "--depth", "19"], "student depth must be in [1, 18]"),
    (
        ["distill", "--teacher", "{teacher}", "--layers", "0,a", *TRAIN],
        "argument --layers: expected comma-sep",
    ),
    ([*DISTILL, "--backbone-layers", "0,a"], "argument --backbone-layers: expected comma-separated integers"),
    ([*DISTILL, "--weights", "task=x"], "bad loss weight 'task=x'"),
    ([*DISTILL, "--weights", "task=0,kd=0,attn=0"], "every loss weight is 0"),
    ([*DISTILL, "--attn-layers", "3"], "bad attention layer pair '3'"),
    ([*DISTILL, "--attn-layers", "3:99"], "teacher layer 99 out of range"),
    ([*DISTILL, "--num-steps", "0"], "argument --num-steps: must be >= 1"),
    ([*DISTILL, "--time-grid", "1,2"], "--time-grid 1,2"),
    ([*DISTILL, "--num-steps", "2", "--target-steps", "0"], "argument --target-steps: must be >= 1"),
    ([*DISTILL, "--target-steps", "5"], "--target-steps is for step distillation"),
    ([*DISTILL, "--states", "nope"], "argument --states: invalid choice"),
    ([*DISTILL, "--student", "{teacher}"], "--student is for step distillation"),
    (
        [*DISTILL, "--num-steps", "2", "--gradient-checkpointing"],
        "does not support --fsdp or --gradient-check",
    ),
    ([*DISTILL, "--camera-map", "=x"], "bad --camera-map entry '=x'"),
    ([*DISTILL, "--image-merge", "0"], "argument --image-merge: must be >= 1"),
    ([*DISTILL, "--image-merge", "3"], "image token merge 3 does not divide the 8x8 patch grid"),
    ([*DISTILL, "--vision-layers", "0"], "argument --vision-layers: must be >= 1"),
    ([*DISTILL, "--vision-layers", "5"], "vision depth must be in [1, 4] (the teacher's vision depth)"),
    ([*DISTILL, "--vision-layer-map", "0,a"], "argument --vision-layer-map: expected comma-separated"),
    ([*DISTILL, "--vision-layer-map", "0,4"], "vision layers [4] are out of range"),
    ([*DISTILL, "--vision-layer-map", "2,1"], "vision layer list must be strictly increasing"),
    ([*DISTILL, "--vision-layers", "2", "--vision-layer-map", "0"], "vision depth 2 does not match"),
    (
        [*DISTILL[:3], "--student", "{teacher}", "--num-steps", "2", "--image-merge", "2", *TRAIN],
        "--image-merge shape a new student; --student already has its prefix",
    ),
    ([*DISTILL, "--weights", "vision=x"], "bad loss weight 'vision=x'"),
    ([*DISTILL, "--weights", "vision=1", "--freeze-vision"], "which --freeze-vision freezes"),
    # eval
    ([*EVAL, "--policy", "{missing}"], "policy folder not found"),
    ([*EVAL, "--env", "nope"], "argument --env: invalid choice"),
    ([*EVAL, "--tasks", "nope"], "unknown Meta-World task 'nope'"),
    ([*EVAL, "--episodes-per-task", "0"], "episodes-per-task must be >= 1"),
    ([*EVAL, "--seed", "-1"], "seed must be >= 0"),
    ([*EVAL, "--max-steps", "501"], "max-steps must be in [1, 500]"),
    ([*EVAL, "--n-action-steps", "0"], "n-action-steps must be >= 1"),
    ([*EVAL, "--workers", "0"], "workers must be >= 1"),
    ([*EVAL, "--image-size", "0"], "argument --image-size: must be >= 1"),
    ([*EVAL, "--device", "foo"], "--device 'foo' is not a torch device"),
    ([*EVAL, "--num-steps", "0"], "argument --num-steps: must be >= 1"),
    ([*EVAL, "--videos-per-task", "-1"], "videos-per-task must be >= 0"),
    ([*EVAL, "--tokenizer", "{missing}"], "--tokenizer: file not found"),
    ([*EVAL, "--out", "{file}"], "--out {file}: exists and is not a folder"),
    ([*EVAL, "--video", "{file}"], "--video {file}: exists and is not a folder"),
    ([*EVAL, "--backend", "nope"], "argument --backend: invalid choice: 'nope'"),
    ([*EVAL, "--inference-delay", "-1"], "inference-delay must be an integer >= 0"),
    ([*EVAL, "--inference-delay", "x"], "argument --inference-delay: invalid int value"),
    (
        [*EVAL, "--n-action-steps", "10", "--inference-delay", "2"],
        "inference-delay 2 + 10 actions per chunk exceed the chunk of 10",
    ),
    ([*EVAL, "--inference-delay", "6"], "inference-delay 6 is more than the 5 actions run per chunk"),
    (
        [*EVAL, "--inference-delay", "4", "--n-action-steps", "3"],
        "inference-delay 4 is more than the 3 actions",
    ),
    (
        [*EVAL, "--device", "cpu", "--backend", "onnxruntime", "--rtc"],
        "--rtc needs the torch backend",
    ),
    (
        [*EVAL, "--device", "cpu", "--backend", "onnxruntime", "--truncate-prompt"],
        "--truncate-prompt is not available with the onnxruntime backend",
    ),
    # bench
    ([*BENCH, "--preset", "nope"], "unknown preset 'nope'"),
    (["bench", "--policy", "{missing}", "--out", "{out}"], "no config.json"),
    ([*BENCH, "--depth", "0"], "argument --depth: must be >= 1"),
    ([*BENCH, "--compare", "6,x"], "argument --compare: expected comma-separated depths"),
    ([*BENCH, "--variant", "nope"], "argument --variant: invalid choice"),
    ([*BENCH, "--device", "foo"], "--device 'foo' is not a torch device"),
    ([*BENCH, "--dtype", "nope"], "argument --dtype: invalid choice"),
    ([*BENCH, "--batch-size", "0"], "argument --batch-size: must be >= 1"),
    ([*BENCH, "--cameras", "0"], "argument --cameras: must be >= 1"),
    ([*BENCH, "--lang-tokens", "0"], "argument --lang-tokens: must be >= 1"),
    ([*BENCH, "--num-steps", "0"], "argument --num-steps: must be >= 1"),
    ([*BENCH, "--chunk", "0"], "argument --chunk: must be >= 1"),
    ([*BENCH, "--modes", "foo"], "unknown mode 'foo'"),
    ([*BENCH, "--modes", ","], "argument --modes: expected comma-separated modes"),
    ([*BENCH, "--backend", "nope"], "argument --backend: unknown backend 'nope'"),
    ([*BENCH, "--backend", ","], "argument --backend: expected comma-separated backends"),
    ([*BENCH, "--backend", "torch,torch"], "argument --backend: each backend once"),
    ([*BENCH, "--warmup", "-1"], "argument --warmup: must be >= 0"),
    ([*BENCH, "--iters", "5"], "--iters must be >= 20"),
    ([*BENCH, "--threads", "0"], "argument --threads: must be >= 1"),
    ([*BENCH, "--out", "{taken}"], "--out {taken}: is a folder; give a file path"),
    ([*BENCH, "--compare", "1,2", "--plot", "{out}.txt"], "--plot {out}.txt: expected a file ending in .png"),
    ([*BENCH, "--image-merge", "0"], "argument --image-merge: must be >= 1"),
    ([*BENCH, "--image-merge", "3"], "--image-merge 3 does not divide the 4x4 patch grid"),
    ([*BENCH, "--vision-depth", "0"], "argument --vision-depth: must be >= 1"),
    ([*BENCH, "--vision-depth", "3"], "--vision-depth must be in [1, 2] (the preset's SigLIP layers), got 3"),
    (
        ["bench", "--policy", "{teacher}", "--image-merge", "2", "--out", "{out}"],
        "--image-merge/--vision-depth apply to --preset only",
    ),
    # serve
    ([*SERVE, "--policy", "{missing}"], "no config.json"),
    ([*SERVE, "--backend", "nope"], "argument --backend: invalid choice"),
    ([*SERVE, "--backend", "onnxruntime", "--device", "cpu"], "--device is for the torch backend"),
    ([*SERVE, "--port", "70000"], "argument --port: must be a TCP port in [0, 65535]"),
    ([*SERVE, "--device", "foo"], "--device 'foo' is not a torch device"),
    ([*SERVE, "--obs-map", "nope"], "unknown observation mapping 'nope'"),
    ([*SERVE, "--num-steps", "0"], "argument --num-steps: must be >= 1"),
    ([*SERVE, "--threads", "0"], "argument --threads: must be >= 1"),
    ([*SERVE, "--max-frame-mb", "0"], "argument --max-frame-mb: must be > 0"),
    ([*SERVE, "--log-level", "nope"], "argument --log-level: invalid choice"),
    ([*SERVE, "--tokenizer", "{missing}"], "--tokenizer: file not found"),
    # export
    ([*EXPORT, "--policy", "{missing}"], "no config.json"),
    ([*EXPORT, "--format", "nope"], "argument --format: invalid choice"),
    ([*EXPORT, "--out", "{taken}"], "exists and is not an earlier export"),
    ([*EXPORT, "--dtype", "nope"], "argument --dtype: invalid choice"),
    ([*EXPORT, "--batch-size", "0"], "batch_size must be >= 1"),
    ([*EXPORT, "--prompt-length", "0"], "prompt_length must be >= 1"),
    ([*EXPORT, "--cameras", "nope"], "--cameras: unknown slot(s) ['nope']"),
    ([*EXPORT, "--num-steps", "0"], "argument --num-steps: must be >= 1"),
    ([*EXPORT, "--opset", "5"], "opset must be in [14, "),
    # demo
    ([*DEMO, "--teacher", "{missing}"], "not a pretrained_model folder"),
    ([*DEMO, "--out", "{file}"], "--out {file}: exists and is not a folder"),
    ([*DEMO, "--tasks", "nope"], "unknown Meta-World task 'nope'"),
    ([*DEMO, "--demos-per-task", "0"], "--demos-per-task must be >= 1"),
    ([*DEMO, "--episodes-per-task", "0"], "--episodes-per-task must be >= 1"),
    ([*DEMO, "--steps", "0"], "--steps must be >= 1"),
    ([*DEMO, "--batch-size", "0"], "--batch-size must be >= 1"),
    ([*DEMO, "--max-steps", "501"], "--max-steps must be <= 500"),
    ([*DEMO, "--depth", "18"], "--depth must be in [1, 17]"),
    ([*DEMO, "--lr", "-1"], "argument --lr: must be a finite number > 0"),
    ([*DEMO, "--workers", "0"], "--workers must be >= 1"),
    ([*DEMO, "--threads", "0"], "--threads must be >= 1"),
    # to-lerobot
    ([*TO_LEROBOT, "--policy", "{missing}"], "no config.json"),
    ([*TO_LEROBOT, "--out", "{teacher}"], "--out must differ from the policy folder"),
    ([*TO_LEROBOT, "--out", "{taken}"], "exists (pass --overwrite to replace it)"),
    ([*TO_LEROBOT, "--camera-map", "foo"], "bad --camera-map entry 'foo'"),
    ([*TO_LEROBOT, "--camera-map", "a=nope"], "camera_map targets unknown model slot 'nope'"),
    ([*TO_LEROBOT, "--n-action-steps", "0"], "argument --n-action-steps: must be >= 1"),
    ([*TO_LEROBOT, "--n-action-steps", "999"], "n_action_steps 999 must be in [1, chunk_size"),
    ([*TO_LEROBOT, "--tokenizer", "{missing}"], "--tokenizer: file not found"),
]


def _id(case: tuple[list[str], str]) -> str:
    """The command and the flags a row adds to its command's base argv, e.g. 'distill --layers 0,a'."""
    argv = case[0]
    for base in (DISTILL, COLLECT, EVAL, BENCH, SERVE, EXPORT, DEMO, TO_LEROBOT, TRAIN):
        for i in range(len(argv) - len(base) + 1):
            if argv[i : i + len(base)] == base:
                argv = argv[:i] + argv[i + len(base) :]
                break
    return " ".join([case[0][0], *(a for a in argv if a != case[0][0])])


@pytest.mark.parametrize("argv,message", CASES, ids=[_id(c) for c in CASES])
def test_a_bad_value_is_one_line_and_exit_2(argv, message, tmp_path, monkeypatch, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "file.txt").write_text("not an output of shallowpi\n")
    paths = {
        "{teacher}": str(bundled_teacher_path()),
        "{out}": str(tmp_path / "out"),
        "{taken}": str(taken),
        "{file}": str(taken / "file.txt"),
        "{missing}": str(tmp_path / "missing"),
        "{dataset}": str(tmp_path / "dataset"),
    }
    if "{dataset}" in argv:
        shutil.copytree(find_reference() / "lerobot_dataset_v3_small", tmp_path / "dataset")
    for key, path in paths.items():
        argv = [a.replace(key, path) for a in argv]
        message = message.replace(key, path)
    message = message.replace("{file}", paths["{file}"]).replace("{taken}", paths["{taken}"])
    message = message.replace("{out}", paths["{out}"])
    if argv[0] == "serve":  # a value that slipped through must fail the test, not serve forever
        monkeypatch.setattr("shallowpi.commands.serve._serve", _no_serving)

    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's exit (cli.Parser: one line)
        code = e.code
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"shallowpi {argv[0]}: error: "), err
    assert message in lines[0], err
    assert not (tmp_path / "out").exists()  # refused before anything was written
    assert sorted(p.name for p in taken.iterdir()) == ["file.txt"]


async def _no_serving(server) -> None:
    raise AssertionError("serve started although a value was bad")
