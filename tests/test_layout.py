"""The package's shape (issue 21): the library imports no method, no LM and no CLI; importing
jaxrec or validating a LightGCN config loads neither; every error derives from JaxrecError;
components are typed records; every model's settings are its own; stored configs of jaxrec 0.1
still load; the NNX bridge and the torch-style initializers against torch."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxrec
from jaxrec import registry as R
from jaxrec.config import (
    LEGACY_DEFAULTS,
    Config,
    ConfigError,
    ModelSettings,
    model_spec,
    settings_fields,
    shared_field_names,
)
from jaxrec.errors import JaxrecError

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "jaxrec"
#: The library folders / modules that must import no method, no LM and no CLI (issue 21).
CORE = ("data", "graph", "models", "objectives", "init", "train", "eval", "config.py", "registry.py", "losses.py",
        "nn.py", "errors.py", "fetch.py")


def _imports(path: Path, root: Path = REPO) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, relative imports resolved."""
    package = list(path.relative_to(root).parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
    return out


def _files(*parts: str) -> list[Path]:
    out = []
    for part in parts:
        p = PKG / part
        out += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    return out


def _forbidden(files, prefixes, root: Path = REPO) -> list[str]:
    bad = []
    for f in files:
        for line, mod in _imports(f, root):
            if any(mod == p or mod.startswith(p + ".") for p in prefixes):
                bad.append(f"{f.relative_to(root)}:{line} imports {mod}")
    return sorted(set(bad))


def test_ast_reader_sees_relative_and_absolute_imports(tmp_path):
    """The import reader itself: a planted violation in each form is found (the test can fail)."""
    fake = tmp_path / "jaxrec" / "data" / "planted.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from jaxrec.methods.allmrec import stage1\nimport jaxrec.lm.model\nfrom ..cli import main\n"
                    "from jaxrec import cli\nfrom .atomic import x\n")
    bad = _forbidden([fake], ("jaxrec.methods", "jaxrec.lm", "jaxrec.cli"), root=tmp_path)
    assert [b.split(" imports ")[0] for b in bad] == [f"jaxrec/data/planted.py:{i}" for i in (1, 1, 2, 3, 3, 4)], bad


def test_core_library_imports_no_method_no_lm_and_no_cli():
    bad = _forbidden(_files(*CORE), ("jaxrec.methods", "jaxrec.lm", "jaxrec.cli", "jaxrec.serve.cli"))
    assert not bad, "\n".join(bad)


def test_no_library_module_imports_a_method():
    library = [p for p in PKG.rglob("*.py") if "methods" not in p.relative_to(PKG).parts
               and p.name not in ("cli.py", "__main__.py") or p == PKG / "serve" / "cli.py"]
    bad = _forbidden(library, ("jaxrec.methods",))
    assert not bad, "\n".join(bad)
    # the shell runs one way: the serve subcommands never import the top-level CLI
    assert not _forbidden([PKG / "serve" / "cli.py"], ("jaxrec.cli",))


def test_importing_jaxrec_and_validating_lightgcn_loads_no_lm_and_no_method():
    code = ("import jaxrec, sys; c = jaxrec.Config('lightgcn'); jaxrec.get_model(c); "
            "jaxrec.Config.for_model('sasrec'); "
            "bad = [m for m in sys.modules if m.startswith(('jaxrec.lm', 'jaxrec.methods', 'jaxrec.cli'))]; "
            "assert not bad, bad; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_method_models_are_known_only_once_registered():
    code = ("import jaxrec\n"
            "try:\n    jaxrec.Config('allmrec_stage1')\nexcept jaxrec.ConfigError as e:\n"
            "    assert 'jaxrec.methods.register_all()' in str(e), e\nelse:\n    raise SystemExit('known')\n"
            "import jaxrec.methods as m; m.register_all(); m.register_all()\n"
            "assert jaxrec.Config('allmrec_stage1').settings.joint_dim == 128\nprint('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def _all_modules():
    import jaxrec.methods

    jaxrec.methods.register_all()
    for info in pkgutil.walk_packages(jaxrec.__path__, "jaxrec."):
        if info.name.endswith("__main__"):
            continue
        yield __import__(info.name, fromlist=["_"])


def test_every_error_class_derives_from_jaxrec_error():
    from jaxrec.train import TrainingDivergedError

    errors = {}
    for module in _all_modules():
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, Exception) and obj.__module__ == module.__name__):
                errors[f"{module.__name__}.{name}"] = obj
    assert len(errors) >= 15
    bad = [n for n, cls in errors.items() if not issubclass(cls, JaxrecError) and cls is not TrainingDivergedError]
    assert not bad, bad


def test_components_are_typed_records_and_settings_are_each_models_own():
    import jaxrec.methods

    jaxrec.methods.register_all()
    kinds = {R.MODELS: R.ModelSpec, R.CONTEXTS: R.ContextKind, R.BATCH_KINDS: R.BatchKind,
             R.EVALUATIONS: R.EvaluationProtocol}
    for reg, record in kinds.items():
        for name in reg.names():
            assert isinstance(reg.get(name), record), (reg.kind, name)
    shared = set(shared_field_names())
    for name in R.MODELS.names():
        spec = model_spec(name)
        assert issubclass(spec.settings, ModelSettings) and dataclasses.is_dataclass(spec.settings)
        assert not shared & set(settings_fields(spec.settings)), name  # a setting never shadows a shared key
        assert set(spec.defaults) <= shared, name  # registered defaults are for shared keys only
        config = Config.for_model(name)  # with its protocol defaults (stage 2 is evaluated by its LM)
        assert isinstance(config.settings, spec.settings)
        assert Config.from_dict(config.to_dict()) == config  # round trip through the stored form


def test_misplaced_and_unknown_keys_name_the_model(tmp_path):
    with pytest.raises(ConfigError, match=r"model 'lightgcn' has no setting 'max_seq_len' \(a setting of sasrec"):
        Config("lightgcn", max_seq_len=20)
    with pytest.raises(ConfigError, match="model 'mf' has no setting 'nope' \\(unknown config key\\)"):
        Config("mf").with_overrides(["nope=1"])
    toml = tmp_path / "run.toml"
    toml.write_text('model = "sgcl"\nssl_weight = 0.3\n')
    with pytest.raises(ConfigError, match="model 'sgcl' has no setting 'ssl_weight' \\(a setting of sgl\\)"):
        jaxrec.load_config_file(toml)
    with pytest.raises(AttributeError, match="model 'mf' has no such setting"):
        Config("mf").num_layers
    # changing the model keeps the settings changed from the old model's defaults that both have
    c = Config("lightgcn", embedding_size=64, num_layers=3).replace(model="sgl")
    assert (c.embedding_size, c.num_layers, c.ssl_weight) == (64, 3, 0.05)
    assert Config("lightgcn").replace(model="sasrec").embedding_size == 50  # SASRec's own default


def test_stored_configs_of_jaxrec_0_1_load():
    """jaxrec 0.1 stored every key for every model; keys of other models at their old defaults are
    dropped, another value is refused naming the model."""
    flat = {**LEGACY_DEFAULTS, **Config("lightgcn").to_dict()}
    assert Config.from_dict(flat) == Config("lightgcn")
    sas = {**LEGACY_DEFAULTS, **Config.for_model("sasrec").to_dict()}
    assert Config.from_dict(sas) == Config.for_model("sasrec")
    with pytest.raises(ConfigError, match="model 'lightgcn' has no setting 'max_seq_len'"):
        Config.from_dict({**flat, "max_seq_len": 7})


def test_run_folder_of_jaxrec_0_1_serves(tmp_path):
    """A run folder whose run.json / results.json hold the 0.1 flat config loads for recommend."""
    from helpers import write_tiny_dataset

    folder = write_tiny_dataset(tmp_path)
    config = Config(dataset=str(folder), data_cache=False, epochs=1, embedding_size=8, topk=(5, 10), batch_size=64)
    ds = jaxrec.load_dataset(folder, config)
    res = jaxrec.fit(jaxrec.get_model(config), ds, config, out_dir=tmp_path / "run", progress=False)
    for name in ("run.json", "results.json"):
        data = json.loads((tmp_path / "run" / name).read_text())
        data["config"] = {**LEGACY_DEFAULTS, **data["config"]}
        data.pop("format", None)
        (tmp_path / "run" / name).write_text(json.dumps(data))
    run = jaxrec.load_run(tmp_path / "run")
    assert run.config == config
    np.testing.assert_array_equal(np.asarray(run.params["item_embedding"]), np.asarray(res.params["item_embedding"]))
    assert len(jaxrec.recommend(run, [str(ds.user_ids[0])], k=3).items[0]) == 3


# ----------------------------------------------------------------------------- the NNX bridge
def test_pure_module_round_trip_and_named_errors():
    from flax import nnx

    from jaxrec.nn import PureModule, init_params

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.lin = nnx.Linear(3, 4, rngs=rngs)
            self.norm = nnx.LayerNorm(4, rngs=rngs)

        def __call__(self, x):
            return self.norm(self.lin(x))

    params = init_params(lambda rngs: Net(rngs), jax.random.key(0))
    spec = PureModule.of(lambda rngs: Net(rngs))
    assert jax.tree.structure(spec.shapes()) == jax.tree.structure(params)
    x = np.ones((2, 3), np.float32)
    direct = Net(nnx.Rngs(params=jax.random.key(0)))(x)
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda p: spec.merge(p)(x))(params)), np.asarray(direct))

    class Bad(JaxrecError, ValueError):
        pass

    wrong = {**params, "lin": {**params["lin"], "kernel": np.zeros((3, 5), np.float32)}}
    with pytest.raises(Bad, match=r"w\['lin'\]\['kernel'\]: shape \(3, 5\); expected \(3, 4\)"):
        spec.merge(wrong, check=True, error=Bad, what="w")
    with pytest.raises(Bad, match="structure does not match"):
        spec.check({"lin": params["lin"]}, Bad)


def test_torch_style_initializers_match_torch_statistics():
    torch = pytest.importorskip("torch")
    from jaxrec.nn import torch_uniform, xavier_normal, xavier_uniform

    torch.manual_seed(0)
    shape = (300, 500)
    t = torch.empty(shape[1], shape[0])  # torch weights are [out, in]
    cases = [(xavier_normal, lambda: torch.nn.init.xavier_normal_(t), None),
             (xavier_uniform, lambda: torch.nn.init.xavier_uniform_(t), (6 / (shape[0] + shape[1])) ** 0.5),
             (torch_uniform(shape[0]), lambda: torch.nn.Linear(shape[0], shape[1]).weight.detach(), shape[0] ** -0.5)]
    for ours, theirs, bound in cases:
        a = np.asarray(ours(jax.random.key(1), shape))
        b = theirs().numpy()
        # 150,000 draws: the std's relative standard error is ~0.2%; the mean's is std / sqrt(n)
        assert abs(a.std() / b.std() - 1) < 0.01 and abs(a.mean()) < 4 * a.std() / np.sqrt(a.size)
        if bound is not None:  # uniform: the same support, reached
            assert np.abs(a).max() <= bound and np.abs(b).max() <= bound * (1 + 1e-6)
            assert np.abs(a).max() > 0.999 * bound and np.abs(b).max() > 0.999 * bound
