"""The tree is the architecture: the model at the top of tinyref/, mirrored by oracle/, and every
other role in a sub-package that imports only the layers below it (docs/architecture.md)."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tinyref"

# the model: one file per component, mirrored name for name by oracle/ (config has no oracle twin:
# the oracle takes any object with the config's attributes)
COMPONENTS = ("embedding", "linear", "rope", "layernorm", "attention", "feedforward", "block", "model", "loss", "optim")
TOP_LEVEL = {"__init__", "__main__", "config", "errors", *COMPONENTS}

# what each layer may import from tinyref (the model layer "" is everything at the top level)
ALLOWED = {
    "": {""},
    "runtime": {"", "runtime"},
    "train": {"", "runtime", "train"},
    "generation": {"", "runtime", "generation"},
    "verify": {"", "runtime", "verify"},
    "testing": {"", "verify", "testing"},
    "bench": {"", "runtime", "train", "generation", "verify", "bench"},
    "cli": {"", "runtime", "train", "generation", "verify", "bench", "cli"},
}
# the package's faces: `import tinyref` re-exports generation's entry points; `python -m tinyref` is the CLI
FACE_EXTRA = {"tinyref": {"generation"}, "tinyref.__main__": {"cli"}}


def layer_of(module: str) -> str:
    """'tinyref.train.loop' -> 'train'; 'tinyref.model' (a top-level file) -> ''."""
    parts = module.split(".")[1:]
    return parts[0] if len(parts) > 1 or (parts and (PACKAGE / parts[0]).is_dir()) else ""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def tinyref_imports(source: str, module: str, is_package: bool) -> set[str]:
    """The tinyref modules a source imports (relative imports resolved against ``module``)."""
    found = set()
    base = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                target = base[: len(base) - node.level + 1] + ([node.module] if node.module else [])
                names = [".".join(target)] if node.module else [".".join(target + [a.name]) for a in node.names]
            else:
                names = [node.module]
            found |= {n for n in names if n and n.split(".")[0] == "tinyref"}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "tinyref"}
    return found


def layering_violations(sources: dict[str, tuple[str, bool]]) -> list[str]:
    """'A imports B' for every import that runs from a layer to one it may not use."""
    bad = []
    for module, (source, is_package) in sorted(sources.items()):
        layer = layer_of(module)
        allowed = ALLOWED[layer] | FACE_EXTRA.get(module, set())
        for target in sorted(tinyref_imports(source, module, is_package)):
            if target != "tinyref" and layer_of(target) not in allowed:
                bad.append(f"{module} ({layer or 'model'}) imports {target} ({layer_of(target) or 'model'})")
    return bad


def package_sources() -> dict[str, tuple[str, bool]]:
    return {module_name(p): (p.read_text(), p.name == "__init__.py") for p in PACKAGE.rglob("*.py")}


def test_the_top_level_holds_the_model_and_every_other_role_a_folder():
    files = {p.stem for p in PACKAGE.glob("*.py")}
    assert files == TOP_LEVEL, f"top-level files beyond the model: {sorted(files - TOP_LEVEL)}; missing: {sorted(TOP_LEVEL - files)}"
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders == set(ALLOWED) - {""}


@pytest.mark.parametrize("component", COMPONENTS)
def test_each_component_is_mirrored_by_the_oracle_and_tested(component):
    assert (ROOT / "oracle" / f"{component}.py").is_file()
    assert (ROOT / "tests" / f"test_{component}.py").is_file()


def test_every_layer_imports_only_the_layers_below_it():
    assert layering_violations(package_sources()) == []


def test_the_layering_check_catches_an_upward_import():
    """Negative control: a model file importing the CLI, and the runtime importing training, are caught."""
    sources = package_sources()
    sources["tinyref.model"] = (sources["tinyref.model"][0] + "\nfrom .cli import main\n", False)
    sources["tinyref.runtime.devices"] = (sources["tinyref.runtime.devices"][0] + "\nfrom ..train import train\n", False)
    assert layering_violations(sources) == ["tinyref.model (model) imports tinyref.cli (cli)",
                                            "tinyref.runtime.devices (runtime) imports tinyref.train (train)"]


def test_no_file_outgrows_one_role():
    long = {str(p.relative_to(ROOT)): n for p in [*PACKAGE.rglob("*.py"), *(ROOT / "oracle").glob("*.py")]
            if (n := len(p.read_text().splitlines())) > 300}
    assert long == {}, f"split these by role: {long}"


def test_the_package_map_names_every_module_of_every_folder():
    rows = {line.split("|")[1].strip(" `"): line for line in (ROOT / "docs" / "architecture.md").read_text().splitlines()
            if line.startswith("| `tinyref/")}
    unnamed = {folder: [p.stem for p in (PACKAGE / folder).glob("*.py") if p.stem != "__init__" and f"`{p.stem}`" not in
                        rows.get(f"tinyref/{folder}/", "")] for folder in set(ALLOWED) - {""}}
    assert {k: v for k, v in unnamed.items() if v} == {}, "docs/architecture.md does not name these modules"
