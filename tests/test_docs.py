"""The commands in README.md, docs/*.md and benchmarks/README.md stay runnable, so the pages do not rot.

Every command block (fenced, or indented by 4 spaces after a blank line) is
split into shell commands, and each command of this project is checked:

- `bin/<tool>`, `dcl-<tool>` and `python -m dcl_keras...`: the tool exists,
  and every `--flag` it is given is one the tool defines (its absl flags,
  read once per tool from a child process that imports its module; `--noX`
  for a boolean X; a value among the choices of an enum flag);
- `--config=configs/X.py[:arg]` (bin/train and the other config-file tools,
  and bin/sweep's base config): the file exists and loads with
  `dcl_keras.config.load_config_file`, and every `--config.a.b=value`, and
  bin/sweep's `--set=a.b=value` and `--vary=a.b=v1,v2`, names a field of it;
- `python benchmarks/X.py`, `python -m benchmarks.studies.X` (or another script of the repository): the script
  exists and defines each `--flag` (argparse `add_argument`, read from its
  source);
- `make <target>`: the Makefile has the target.

Nothing is run, so no command is skipped for what it would cost: a line that
trains for hours on a GPU is checked like one that takes a second. Skipped,
by rule: commands whose program is not this project's (docker, curl, pip,
tfds, pytest, ...) and fenced blocks in a language other than a shell (the
README's Python example runs in tests/test_package.py). Relative links and
their #anchors must point at files and headings that exist.
"""

import ast
import functools
import glob
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib

from helpers import ROOT

SHELL_FENCES = ("", "sh", "bash", "shell", "console")
SEPARATORS = {";", "&&", "||", "|", "&"}  # Parentheses stay words: a listing "(bin/x)" is not a subshell.
# bin/sweep and bin/audit take their base config as a plain string and fields through these flags.
FIELD_FLAGS = {"dcl_keras.commands.sweep": ("set", "vary"), "dcl_keras.commands.audit": ("set",)}
README_MAX_LINES = 250


def doc_files():
    """The pages whose commands are kept runnable, relative to the repository root."""
    pages = ["README.md", *sorted(glob.glob("docs/*.md", root_dir=ROOT)), "benchmarks/README.md"]
    return [page for page in pages if os.path.isfile(os.path.join(ROOT, page))]


def command_lines(text):
    """(line number, logical line) of every line in a shell command block; backslash continuations joined."""
    blocks = []  # Lists of (line number, line), indentation removed.
    fence, indented, previous_blank = None, None, True
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
            elif blocks[-1] is not None:
                blocks[-1].append((number, line))
            continue
        if stripped.startswith(("```", "~~~")):
            fence, indented = stripped[:3], None
            language = stripped[3:].strip().split(" ")[0].lower()
            blocks.append([] if language in SHELL_FENCES else None)
            continue
        indent = len(line) - len(line.lstrip(" "))
        if stripped and indent >= 4 and (previous_blank or indented is not None):
            if indented is None:
                indented = indent
                blocks.append([])
            blocks[-1].append((number, line[min(indent, indented) :]))
        elif stripped:
            indented = None
        previous_blank = not stripped
    logical = []
    for block in filter(None, blocks):
        pending, start = "", None
        for number, line in block:
            start = number if not pending else start
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            logical.append((start, (pending + line).strip()))
            pending = ""
        if pending:
            logical.append((start, pending.strip()))
    return [(number, line) for number, line in logical if line]


def split_commands(line):
    """The simple commands of a shell line, as word lists (comments dropped)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, words = [], []
    for word in lexer:
        if word in SEPARATORS:
            commands.append(words)
            words = []
        else:
            words.append(word)
    commands.append(words)
    return [words for words in commands if words]


def _is_python(word):
    return re.fullmatch(r"python(3(\.\d+)?)?", os.path.basename(word)) is not None


def resolve(words, root):
    """(tool, arguments) for a command of this project, or None for another program's.

    tool is ("absl", module), ("script", path) or ("make", None); ("missing", why) for a tool that does not exist.
    """
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):  # VAR=value prefixes.
        words = words[1:]
    if not words:
        return None
    program, args = words[0], words[1:]
    if program == "make":
        return ("make", None), args
    if _is_python(program) and args:
        if args[0] == "-m" and len(args) > 1:
            return _module_tool(args[1], root), args[2:]
        program, args = args[0], args[1:]
    if re.fullmatch(r"bin/[\w.-]+", program):
        return _script_tool(program, root), args
    if re.fullmatch(r"benchmarks/[\w.-]+\.py", program):
        path = os.path.join(root, program)
        return (("script", path) if os.path.isfile(path) else ("missing", f"no script {program}")), args
    if os.path.basename(program).startswith("dcl-"):
        scripts = console_scripts(root)
        name = os.path.basename(program)
        if name not in scripts:
            return ("missing", f"no console command {name} in pyproject.toml"), args
        return _module_tool(scripts[name].split(":")[0], root), args
    return None


def _module_tool(module, root):
    if module.startswith("benchmarks."):  # A finished study, run as `python -m benchmarks.studies.<name>`.
        path = os.path.join(root, *module.split(".")) + ".py"
        return ("script", path) if os.path.isfile(path) else ("missing", f"no module {module}")
    if module.split(".")[0] != "dcl_keras":
        return ("other", module)
    base = os.path.join(root, *module.split("."))
    if module.startswith("dcl_keras.commands."):
        return ("absl", module) if os.path.isfile(base + ".py") else ("missing", f"no module {module}")
    for path in (base + ".py", os.path.join(base, "__main__.py")):
        if os.path.isfile(path):
            return ("script", path)
    return ("missing", f"no module {module}")


def _script_tool(program, root):
    path = os.path.join(root, program)
    if not os.path.isfile(path):
        return ("missing", f"no script {program}")
    with open(path) as f:
        match = re.search(r"^from (dcl_keras\.commands\.\w+) import run$", f.read(), re.M)
    return ("absl", match.group(1)) if match else ("script", path)


@functools.cache
def console_scripts(root):
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["scripts"]


@functools.cache
def make_targets(root):
    with open(os.path.join(root, "Makefile")) as f:
        return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", f.read(), re.M))


_PROBE = """
import json, sys
from absl import app, flags
app.define_help_flags()
__import__(sys.argv[1])
spec = {}
for name, flag in flags.FLAGS._flags().items():
    choices = getattr(flag.parser, "enum_values", None)
    spec[name] = {"boolean": bool(flag.boolean), "choices": list(choices) if choices else None,
                  "config": type(flag).__name__ == "_ConfigFlag"}
print(json.dumps(spec))
"""


@functools.cache
def absl_flags(module, root):
    """{flag name: {"boolean", "choices", "config"}} of a command module, as its absl parser knows them."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, module], capture_output=True, text=True, cwd=root, env=env, timeout=120
    )
    if done.returncode:
        raise RuntimeError(f"cannot read the flags of {module}: {done.stderr[-2000:]}")
    spec = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("flagfile", "undefok"):  # Handled by absl's parser itself.
        spec.setdefault(name, {"boolean": False, "choices": None, "config": False})
    return spec


@functools.cache
def script_flags(path):
    """The --flags a script defines: its argparse add_argument names, or, parsing argv by hand, its '--x' literals."""
    with open(path) as f:
        tree = ast.parse(f.read())
    declared, literals = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            declared.update(a.value[2:] for a in node.args if isinstance(a, ast.Constant) and str(a.value)[:2] == "--")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            literals.update(re.findall(r"^--([A-Za-z_][\w-]*)$", node.value))
    return (declared | {"help"}) if declared else literals


@functools.cache
def load_config(spec, root):
    """(config, None) or (None, why not) for a --config value, loaded as bin/train loads it."""
    from dcl_keras.config import load_config_file

    path = spec if os.path.isabs(spec) else os.path.join(root, spec)
    try:
        return load_config_file(path), None
    except Exception as e:  # Any failure to load is what the check reports.
        return None, f"--config={spec} does not load: {e}"


@functools.cache
def _base_config():
    from dcl_keras.config import base_config

    return base_config()


def has_field(config, path):
    import ml_collections

    node = config
    for key in path.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or key not in node:
            return False
        node = node[key]
    return True


def check_command(tool, args, root):
    """The problems of one command of this project: a list of strings, empty when it is runnable."""
    kind, what = tool
    if kind == "missing":
        return [what]
    if kind == "other":
        return []
    if kind == "make":
        targets = [a for a in args if not a.startswith("-") and "=" not in a]
        return [f"no make target {t!r} in the Makefile" for t in targets if t not in make_targets(root)]
    flag_args = []
    for arg in args:
        if arg == "--":
            break
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg[2:].partition("=")
            flag_args.append((name, value if eq else None))
    if kind == "script":
        known = script_flags(what)
        rel = os.path.relpath(what, root)
        return [f"{rel} has no flag --{name}" for name, _ in flag_args if name not in known]
    spec = absl_flags(what, root)
    tool_name = what.rsplit(".", 1)[-1]
    problems, config = [], None
    config_spec = next((v for n, v in flag_args if n == "config" and v and re.search(r"\.py(:|$)", v)), None)
    if config_spec is not None:
        config, why = load_config(config_spec, root)
        if why:
            problems.append(why)
    elif spec.get("config", {}).get("config"):
        config = _base_config()
    for name, value in flag_args:
        head = name.split(".")[0]
        if name in spec:
            choices = spec[name]["choices"]
            if choices and value is not None and not re.search(r"[$<{]", value) and value not in choices:
                problems.append(f"{tool_name}: --{name}={value} is not one of {choices}")
        elif name.startswith("no") and spec.get(name[2:], {}).get("boolean") and value is None:
            pass
        elif "." in name and spec.get(head, {}).get("config"):
            field = name.split(".", 1)[1]
            if config is not None and not has_field(config, field):
                problems.append(f"{tool_name}: --{name}: no field {field!r} in the config")
        else:
            problems.append(f"{tool_name} has no flag --{name}")
        if name in FIELD_FLAGS.get(what, ()) and value and config is not None:
            field = value.split("=", 1)[0]
            if not has_field(config, field):
                problems.append(f"{tool_name}: --{name}={value}: no field {field!r} in the config")
    return problems


_OURS = re.compile(
    r"^(\S+=\S*\s+)*(\S*python[\d.]*\s+(-m\s+(dcl_keras|benchmarks)|\S*(bin|benchmarks)/)|bin/|\S*dcl-|make\s)"
)


def check_markdown(text, root=ROOT, name="<text>"):
    """(problems, number of commands of this project checked) for one page's text."""
    problems, checked = [], 0
    for number, line in command_lines(text):
        try:
            commands = split_commands(line)
        except ValueError as e:
            if _OURS.match(line):
                problems.append(f"{name}:{number}: cannot split into words ({e}): {line}")
            continue
        for words in commands:
            resolved = resolve(words, root)
            if resolved is None:
                continue
            checked += 1
            problems.extend(f"{name}:{number}: {p}: {line}" for p in check_command(*resolved, root))
    return problems, checked


def test_every_command_in_the_docs_is_runnable():
    problems, checked = [], 0
    for page in doc_files():
        with open(os.path.join(ROOT, page)) as f:
            found, count = check_markdown(f.read(), ROOT, page)
        problems += found
        checked += count
    assert checked >= 40, f"only {checked} commands found in {doc_files()}: is the block extraction broken?"
    assert not problems, "\n".join(problems)


def test_the_checker_reports_what_would_not_run():
    page = "\n".join(
        [
            "Some prose that mentions bin/train --no_such_flag inline, which is not a block.",
            "",
            "    .venv/bin/python bin/train --config=configs/demo.py --workdir=w --no_such_flag=1",
            "    dcl-train --config=configs/demo.py --config.train.no_such_field=3 \\",
            "        --workdir=w",
            "    bin/sweep --config=configs/demo.py --set=train.nope=1 --grid=no_such_grid --sweep_dir=s",
            "    .venv/bin/python bin/evaluate --workdir=w --backend=torch --noflip",
            "    .venv/bin/python bin/train --config=configs/no_such_config.py --workdir=w",
            "    .venv/bin/python bin/no_such_tool --workdir=w",
            "    python -m benchmarks.studies.demo_tail --no_such_option=2",
            "    make no_such_target",
            "",
            "```python",
            "bin/train --also_not_checked=1  # Not a shell block.",
            "```",
            "",
            "```sh",
            "docker run --not-ours tensorflow/serving && make demo",
            ".venv/bin/python bin/train --config=configs/cub_resnet50.py:no_such_arg=1 --workdir=w --config.seed=3",
            "```",
        ]
    )
    problems, checked = check_markdown(page)
    report = "\n".join(problems)
    assert checked == 10, report
    for expected in [
        "train has no flag --no_such_flag",
        "--config.train.no_such_field: no field 'train.no_such_field'",
        "--set=train.nope=1: no field 'train.nope'",
        "--grid=no_such_grid is not one of",
        "--backend=torch is not one of",
        "configs/no_such_config.py does not load",
        "no script bin/no_such_tool",
        "benchmarks/studies/demo_tail.py has no flag --no_such_option",
        "no make target 'no_such_target'",
        "configs/cub_resnet50.py:no_such_arg=1 does not load",
    ]:
        assert expected in report, f"not reported: {expected}\n{report}"
    assert len(problems) == 10, report  # Nothing else: not --noflip, the Python block or docker's flags.
    assert sorted({int(p.split(":")[1]) for p in problems}) == [3, 4, 6, 7, 8, 9, 10, 11, 19], report


def test_the_checker_accepts_a_runnable_page():
    page = (
        "    make demo    # installs everything\n"
        "\n"
        "```bash\n"
        ".venv/bin/python bin/train --config=configs/demo.py --workdir=w --config.train.epochs=3 --helpfull\n"
        "KERAS_BACKEND=jax dcl-evaluate --workdir=w --split=val --noflip | head\n"
        "python -m dcl_keras.data.demo --print_test_image w\n"
        "```\n"
    )
    assert check_markdown(page) == ([], 4)


def _slug(heading):
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path):
    with open(path) as f:
        headings = re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.sub(r"```.*?```", "", f.read(), flags=re.S), re.M)
    seen, anchors = {}, set()
    for heading in headings:
        slug = _slug(heading)
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def test_links_point_at_files_and_headings_that_exist():
    problems = []
    for page in doc_files():
        with open(os.path.join(ROOT, page)) as f:
            text = f.read()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            full = (
                os.path.normpath(os.path.join(ROOT, os.path.dirname(page), path)) if path else os.path.join(ROOT, page)
            )
            if not os.path.exists(full):
                problems.append(f"{page}: link to a missing file: {target}")
            elif anchor and full.endswith(".md") and anchor not in _anchors(full):
                problems.append(f"{page}: link to a missing heading: {target}")
    assert not problems, "\n".join(problems)


def test_the_readme_is_short_and_starts_with_the_two_commands():
    with open(os.path.join(ROOT, "README.md")) as f:
        lines = f.read().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"
    first = [line.split("#")[0].strip() for line in lines[1:6] if line.strip()]
    assert first[:2] == ["make demo", "make test"], first
