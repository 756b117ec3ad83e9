"""nexa.toml and sweep-file validation: one line naming file, key and expectation; exit 2."""

import pytest

from nexa_ops.config import load_config, load_sweep, time_to_hours
from nexa_ops.errors import ConfigError

GOOD = """
name = "lr-grid"
command = ["python", "train.py"]
[grid]
lr = [0.1, 0.01]
"""


def write(tmp_path, text, name="s.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(func, *args):
    with pytest.raises(ConfigError) as info:
        func(*args)
    return str(info.value)


def test_defaults_without_file(tmp_path):
    cfg = load_config(cwd=tmp_path)
    assert cfg.path is None
    assert cfg.runs_dir == (tmp_path / "runs").resolve()


def test_project_file_found_in_cwd_and_env(tmp_path, monkeypatch):
    write(tmp_path, '[cluster]\npartition = "gpu"\naccount = "ml"\nruns_dir = "out"\npyz_path = "~/nexa.pyz"\n', "nexa.toml")
    cfg = load_config(cwd=tmp_path)
    assert cfg.cluster.partition == "gpu" and cfg.cluster.account == "ml"
    assert cfg.runs_dir == (tmp_path / "out").resolve()
    other = write(tmp_path, '[cluster]\npartition = "cpu"\n', "other.toml")
    monkeypatch.setenv("NEXA_CONFIG", str(other))
    assert load_config(cwd=tmp_path).cluster.partition == "cpu"


@pytest.mark.parametrize(
    "text, expected",
    [
        ('[cluster]\npartiton = "gpu"\n', "cluster.partiton: unknown key (did you mean 'partition'?)"),
        ("[cluster]\npartition = 3\n", "cluster.partition: expected a string, got integer 3"),
        ('[clustr]\npartition = "x"\n', "clustr: unknown key (did you mean 'cluster'?)"),
        ('[cost]\nmax_cost = "lots"\n', "cost.max_cost: expected a number, got string 'lots'"),
        ("[teardown.c1]\n", "teardown.c1.tf_dir: missing required key (expected a string)"),
        ('[teardown]\ndirs = "infra"\n', "teardown.dirs: expected a table, got string 'infra'"),
        ("[teardown]\ndirs = { a = 1 }\n", "teardown.dirs.a: expected a string, got integer 1"),
        ('[teardown]\ndirs = { "a b" = "x" }\n', "teardown.dirs: expected a campaign name of letters, digits, '.', '_' or '-', got 'a b'"),
        ('[teardown]\ndirs = { a = " " }\n', "teardown.dirs.a: expected a terraform folder, got an empty string"),
        ('[teardown]\ndirs = { a = "x\\ny" }\n', "teardown.dirs.a: expected a single line"),
        ('[teardown]\ndirs = { a = "x" }\n[teardown.a]\ntf_dir = "y"\n',
         "teardown.dirs.a: campaign 'a' is also mapped by [teardown.a] tf_dir: keep one of the two"),
        ('[teardown.dirs]\ntf_dir = "y"\n', "teardown.dirs.tf_dir: 'dirs' is reserved for the map of campaigns to folders"),
        ("[cluster\n", "invalid TOML"),
        ("[cost]\nmax_cost = nan\n", "cost.max_cost: expected a finite number, got nan"),
        ('[cost.rates]\n"H100-80GB" = inf\n', "cost.rates.H100-80GB: expected a finite number, got inf"),
        ('[cluster]\npartition = "gpu\\ntouch /tmp/x #"\n', "cluster.partition: expected a single line"),
        ('[cluster]\naccount = "ml\\u0000"\n', "cluster.account: expected text without NUL characters"),
        ("[cluster]\nmax_array_size = -5\n", "cluster.max_array_size: expected an integer >= 1"),
    ],
)
def test_project_file_errors(tmp_path, text, expected):
    path = write(tmp_path, text, "nexa.toml")
    message = error_of(load_config, path)
    assert message.startswith(str(path) + ": ")
    assert expected in message
    assert "\n" not in message


def test_teardown_dirs_and_campaign_tables(tmp_path):
    path = write(tmp_path, '[teardown]\ndirs = { exp1 = "infra/exp1", "b.2" = "/abs/b" }\n[teardown.c]\ntf_dir = "infra/c"\n', "nexa.toml")
    cfg = load_config(path)
    assert cfg.teardown_dirs == {"exp1": "infra/exp1", "b.2": "/abs/b"}
    assert list(cfg.teardown) == ["c"] and cfg.teardown["c"].tf_dir == "infra/c"
    assert load_config(write(tmp_path, "", "empty.toml")).teardown_dirs == {}


def test_sweep_parses(tmp_path):
    defn = load_sweep(write(tmp_path, GOOD))
    assert defn.name == "lr-grid" and defn.grid == {"lr": [0.1, 0.01]}
    assert defn.arg_format == "--{key}={value}"


@pytest.mark.parametrize(
    "text, expected",
    [
        ('command = ["x"]\n', "name: missing required key (expected a string)"),
        ('name = "a b"\ncommand = ["x"]\n', "name: expected letters, digits"),
        ('name = "a"\ncommand = []\n', "command: expected a non-empty argv list"),
        ('name = "a"\ncommand = "python train.py"\n', "command: expected a list of strings"),
        ('name = "a"\ncomand = ["x"]\n', "comand: unknown key (did you mean 'command'?)"),
        ('name = "a"\ncommand = ["x"]\n[grid]\nlr = 0.1\n', "grid.lr: expected a list of values"),
        ('name = "a"\ncommand = ["x"]\n[grid]\nlr = []\n', "grid.lr: expected a non-empty list"),
        ('name = "a"\ncommand = ["x"]\n[grid]\nlr = [[1]]\n', "grid.lr: expected a string, number or boolean"),
        ('name = "a"\ncommand = ["x"]\n[grid]\nlr = [1]\n[fixed]\nlr = 2\n', "grid.lr: parameter also set in [fixed]"),
        ('name = "a"\ncommand = ["x"]\n[grid]\nlr = [1]\n[[exclude]]\nlrr = 1\n', "exclude[0].lrr: unknown parameter (did you mean 'lr'?)"),
        ('name = "a"\ncommand = ["x"]\n[resources]\ngpus = 8\n', "resources.gpus: unknown key (did you mean 'gpus_per_node'?)"),
        ('name = "a"\ncommand = ["x"]\n[resources]\nnodes = "2"\n', "resources.nodes: expected an integer, got string '2'"),
        ('name = "a"\ncommand = ["x"]\n[resources]\ntime = "4h"\n', "resources.time: expected a Slurm time"),
        ('name = "a"\ncommand = ["x"]\n[resources]\nmem = "lots"\n', "resources.mem: expected a size"),
        ('name = "a"\ncommand = ["x"]\n[resources]\nextra = ["qos=high"]\n', "resources.extra[0]: expected a directive"),
        ('name = "a"\ncommand = ["x"]\narg_format = "--{key}"\n', "arg_format: expected a template containing '{value}'"),
        ('name = "a"\ncommand = ["x"]\n[random]\nsamples = 0\n', "random.samples: expected an integer >= 1"),
        ('name = "a"\ncommand = ["x"]\n[random.params]\nd = { normal = [0, 1] }\n', "random.params.d: unknown distribution 'normal'"),
        (
            'name = "a"\ncommand = ["x"]\n[random.params]\nd = { log_uniform = [0, 1] }\n',
            "random.params.d.log_uniform: expected [low, high] numbers > 0",
        ),
        ('name = "a"\ncommand = ["x"]\n[random.params]\nd = { uniform = [1] }\n', "random.params.d.uniform: expected [low, high] numbers"),
        ('name = "a"\ncommand = ["x"]\nlauncher = "mpirun"\n', "launcher.kind: expected 'direct' or 'torchrun'"),
        # Nothing that reaches the sbatch script may end its line: that would start a command.
        ('name = "a\\n"\ncommand = ["x"]\n', "name: expected a single line"),
        ('name = "a"\ncommand = ["x"]\n[resources]\naccount = "ml\\ntouch /tmp/x #"\n', "resources.account: expected a single line"),
        ('name = "a"\ncommand = ["x"]\n[resources]\nextra = ["--qos=high\\nrm -rf ~"]\n', "resources.extra[0]: expected a single line"),
        ('name = "a"\ncommand = ["x"]\n[resources]\ngpu_type = "h100\\r"\n', "resources.gpu_type: expected a single line"),
        ('name = "a"\ncommand = ["x"]\n[resources]\nestimated_hours = nan\n', "resources.estimated_hours: expected a finite number"),
        # A value becomes an argv item: a NUL would cut it short, nan would break spec.json.
        ('name = "a"\ncommand = ["x\\u0000y"]\n', "command[0]: expected text without NUL characters"),
        ('name = "a"\ncommand = ["x"]\n[grid]\ns = ["a\\u0000b"]\n', "grid.s: expected text without NUL characters"),
        ('name = "a"\ncommand = ["x"]\n[grid]\nlr = [nan]\n', "grid.lr: expected a finite number, got nan"),
        ('name = "a"\ncommand = ["x"]\n[random.params]\nd = { uniform = [0, inf] }\n', "random.params.d.uniform: expected a finite number"),
    ],
)
def test_sweep_errors(tmp_path, text, expected):
    path = write(tmp_path, text)
    message = error_of(load_sweep, path)
    assert message.startswith(str(path) + ": "), message
    assert expected in message, message
    assert "\n" not in message


def test_missing_sweep_file(tmp_path):
    assert error_of(load_sweep, tmp_path / "nope.toml") == f"{tmp_path / 'nope.toml'}: file not found"


@pytest.mark.parametrize("text, hours", [("90", 1.5), ("04:00:00", 4.0), ("1-12:00:00", 36.0), ("30:00", 0.5), ("2-0", 48.0)])
def test_time_to_hours(text, hours):
    assert time_to_hours(text) == pytest.approx(hours)


def test_line_breaks_stay_allowed_where_they_are_argv(tmp_path):
    """A command word or a parameter value is an argv item: a line break there is literal
    data for the program and never reaches a script line."""
    defn = load_sweep(write(tmp_path, 'name = "a"\ncommand = ["python", "-c", "import sys\\nprint(1)"]\n[grid]\nm = ["two\\nlines"]\n'))
    assert defn.command[2] == "import sys\nprint(1)" and defn.grid["m"] == ["two\nlines"]


def test_a_zero_time_limit_gives_no_hours(tmp_path):
    """Slurm reads --time=0 as no limit: it cannot bound the cost estimate."""
    defn = load_sweep(write(tmp_path, 'name = "a"\ncommand = ["x"]\n[resources]\ntime = "0"\ngpus_per_node = 8\n'))
    assert defn.resources.time_hours() is None


# --- the project root, found upward like git ------------------------------------------------


def test_the_project_file_is_found_from_a_subfolder(tmp_path, monkeypatch):
    write(tmp_path, '[cluster]\nruns_dir = "out"\n', "nexa.toml")
    sub = tmp_path / "src" / "deep"
    sub.mkdir(parents=True)
    monkeypatch.delenv("NEXA_CONFIG", raising=False)
    cfg = load_config(cwd=sub)
    assert cfg.path == (tmp_path / "nexa.toml").resolve()
    assert cfg.root == tmp_path.resolve() and cfg.runs_dir == (tmp_path / "out").resolve()
    write(tmp_path / "src", '[cluster]\nruns_dir = "inner"\n', "nexa.toml")  # the nearest one wins
    assert load_config(cwd=sub).runs_dir == (tmp_path / "src" / "inner").resolve()


def test_the_search_stops_at_home(tmp_path, monkeypatch):
    write(tmp_path, "", "nexa.toml")  # above the home: not looked at
    home = tmp_path / "home"
    (home / "proj").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("NEXA_CONFIG", raising=False)
    cfg = load_config(cwd=home / "proj")
    assert cfg.path is None and cfg.root == (home / "proj").resolve()
    write(home, "", "nexa.toml")  # the home itself is still looked at
    assert load_config(cwd=home / "proj").path == (home / "nexa.toml").resolve()


def test_a_parent_project_file_of_another_user_is_refused(tmp_path, monkeypatch):
    import os

    from tests.conftest import require_root

    require_root()
    path = write(tmp_path, '[cluster]\npython = "/tmp/evil"\n', "nexa.toml")
    os.chown(path, 4242, 4242)
    sub = tmp_path / "src"
    sub.mkdir()
    monkeypatch.delenv("NEXA_CONFIG", raising=False)
    monkeypatch.setattr(os, "getuid", lambda: 1000)  # as a user who is not root (the file is 4242's)
    message = error_of(load_config, None, sub)
    assert message.startswith(f"{path.resolve()}: found above the current folder but owned by uid 4242, not by you")
    assert f"--project {path.resolve()}" in message
    assert load_config(cwd=tmp_path).path == path.resolve()  # in the current folder it is your choice


# --- [search]: successive halving ------------------------------------------------------------


SEARCH = (
    'name = "a"\ncommand = ["x"]\n[grid]\nlr = [1, 2]\n'
    '[search]\nmethod = "halving"\nmetric = "val_loss"\n{extra}\n[search.budget]\nparam = "epochs"\nmin = 1\nmax = 9\n{budget}\n'
)
HEAD = '[search]\nmethod = "halving"\n'
BUDGET = '[search.budget]\nparam = "{}"\nmin = 1\nmax = 3\n'


def test_search_table_parses(tmp_path):
    defn = load_sweep(write(tmp_path, SEARCH.format(extra='eta = 2\nmode = "max"\npromote_partition = "cpu"', budget="")))
    assert defn.search.method == "halving" and defn.search.metric == "val_loss" and defn.search.mode == "max"
    assert defn.search.eta == 2 and defn.search.promote_partition == "cpu"
    assert (defn.search.budget.param, defn.search.budget.min, defn.search.budget.max) == ("epochs", 1, 9)
    assert load_sweep(write(tmp_path, SEARCH.format(extra="", budget=""))).search.eta == 3  # the default
    assert load_sweep(write(tmp_path, GOOD)).search is None


@pytest.mark.parametrize(
    "extra, budget, expected",
    [
        ('method = "hyperband"', "", "search.method: expected 'halving', got 'hyperband'"),
        ('mode = "best"', "", "search.mode: expected 'min' or 'max', got 'best'"),
        ("eta = 1", "", "search.eta: expected an integer >= 2"),
        ("eta = 2.5", "", "search.eta: expected an integer, got float 2.5"),
        ("etaa = 3", "", "search.etaa: unknown key (did you mean 'eta'?)"),
        ('promote_partition = "cpu\\nrm -rf ~"', "", "search.promote_partition: expected a single line"),
        ('promote_partition = " "', "", "search.promote_partition: expected a partition name"),
        ("", "min = 0", "search.budget.min: expected a number > 0"),
        ("", "max = 1", "search.budget.max: expected a number > min (1), got 1"),
        ("", 'max = "9"', "search.budget.max: expected an integer or a number, got string '9'"),
        ("", "max = inf", "search.budget.max: expected an integer or a number"),
        ("", "step = 1", "search.budget.step: unknown key"),
    ],
)
def test_search_errors(tmp_path, extra, budget, expected):
    text = SEARCH.format(extra="", budget="")
    for given, default in ((extra, 'method = "halving"'), (budget, "min = 1"), (budget, "max = 9")):
        if given.split(" =")[0] == default.split(" =")[0]:  # the case's value replaces the default line
            text = text.replace(default + "\n", "", 1)
    text = text.replace("\n\n[search.budget]", f"\n{extra}\n[search.budget]").rstrip("\n") + f"\n{budget}\n"
    path = write(tmp_path, text)
    message = error_of(load_sweep, path)
    assert message.startswith(f"{path}: "), message
    assert expected in message and "\n" not in message, message


@pytest.mark.parametrize(
    "table, expected",
    [
        (HEAD + 'metric = "m"\n', "search.budget: missing required key"),
        (HEAD + BUDGET.format("e"), "search.metric: missing required key"),
        (HEAD + 'metric = "step"\n' + BUDGET.format("e"), "search.metric: expected the name"),
        (HEAD + 'metric = "m"\n' + BUDGET.format("lr"), "search.budget.param: parameter also set in [grid]"),
        (HEAD + 'metric = "m"\n' + BUDGET.format("a b"), "search.budget.param: expected a parameter name"),
        ("[fixed]\ne = 1\n" + HEAD + 'metric = "m"\n' + BUDGET.format("e"), "parameter also set in [fixed]"),
    ],
)
def test_search_required_keys_and_the_budget_parameter(tmp_path, table, expected):
    path = write(tmp_path, 'name = "a"\ncommand = ["x"]\n[grid]\nlr = [1, 2]\n' + table)
    message = error_of(load_sweep, path)
    assert expected in message and "\n" not in message, message
