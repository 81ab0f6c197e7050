"""The layout that README's "Layout" section promises, read from the source with ast.

wce_jax and wce_torch hold the same private modules, share their public names in one
order, import only their own framework, and no module reaches into another module's
underscore names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("wce_jax", "wce_torch")
FRAMEWORK = {"wce_jax": "jax", "wce_torch": "torch"}
#: The one file allowed to import the other framework: the JAX/PyTorch parity demo.
PARITY_DEMO = Path("wce_jax/demo/parity.py")


def _modules(package):
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def _private_modules(package):
    return sorted(p.stem for p in (ROOT / package).glob("_*.py") if p.stem != "__init__")


def _imports(path):
    """(imported module, names) for each import statement; ``import a.b`` gives
    ("a.b", ()), ``from a import b, c`` gives ("a", ("b", "c"))."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            yield node.module or "", tuple(a.name for a in node.names)


def _underscore_attributes(path, package):
    """``alias._name`` where ``alias`` is one of the package's modules imported here."""
    tree = ast.parse(path.read_text(), filename=str(path))
    aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == package:
            aliases |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            aliases |= {a.asname for a in node.names
                        if a.asname and a.name.startswith(package + ".")}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            yield f"{node.value.id}.{node.attr}"


def test_the_two_packages_hold_the_same_private_modules():
    jax_modules, torch_modules = (_private_modules(p) for p in PACKAGES)
    assert jax_modules == torch_modules
    assert {"_checks", "_core", "_losses", "_focal", "_linear", "_weights"} <= set(jax_modules)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_imports_another_modules_underscore_names(package):
    """A module imports its package's ``_core`` and ``_checks`` (as modules) and public
    names, never a name that starts with an underscore."""
    offences = []
    for path in _modules(package):
        where = path.relative_to(ROOT)
        for module, names in _imports(path):
            if not module.startswith(package):
                continue
            parts = module.split(".")[1:]
            if module == package:  # from wce_x import _core as core
                offences += [f"{where}: from {module} import {n}" for n in names
                             if n.startswith("_") and n not in ("_core", "_checks")]
            elif names:  # from wce_x._losses import cross_entropy
                offences += [f"{where}: from {module} import {n}" for n in names
                             if n.startswith("_")]
            elif any(p.startswith("_") and p not in ("_core", "_checks") for p in parts):
                offences.append(f"{where}: import {module}")
        offences += [f"{where}: {a}" for a in _underscore_attributes(path, package)]
    assert not offences, "\n".join(offences)


def test_the_underscore_check_catches_an_offence(tmp_path, monkeypatch):
    """The check above is not hollow: a module importing ``_class_terms`` is caught."""
    package = tmp_path / "wce_jax"
    package.mkdir()
    (package / "_focal.py").write_text("from wce_jax._losses import _class_terms\n"
                                       "from wce_jax import _core as core\n"
                                       "core._private(1)\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    with pytest.raises(AssertionError, match="_class_terms") as raised:
        test_no_module_imports_another_modules_underscore_names("wce_jax")
    assert "core._private" in str(raised.value)


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_its_own_framework(package):
    other = FRAMEWORK["wce_torch" if package == "wce_jax" else "wce_jax"]
    offences = []
    for path in _modules(package):
        if path.relative_to(ROOT) == PARITY_DEMO:
            continue
        for module, _ in _imports(path):
            top = module.split(".")[0]
            if top in (other, "wce_torch" if package == "wce_jax" else "wce_jax"):
                offences.append(f"{path.relative_to(ROOT)}: imports {module}")
    assert not offences, "\n".join(offences)


def test_shared_public_names_come_in_the_same_order():
    import wce_jax
    import wce_torch

    shared = set(wce_jax.__all__) & set(wce_torch.__all__)
    assert [n for n in wce_jax.__all__ if n in shared] == \
        [n for n in wce_torch.__all__ if n in shared]
    assert len(shared) >= 12
    for package in (wce_jax, wce_torch):
        assert all(hasattr(package, n) for n in package.__all__)
        # the shared names lead: nothing framework-specific comes before the last of them
        last_shared = max(package.__all__.index(n) for n in shared)
        assert set(package.__all__[:last_shared + 1]) == shared


def test_torch_functional_is_the_same_functions():
    """``wce_torch.functional`` stays a public namespace of the very same objects."""
    import wce_torch
    import wce_torch.functional as WF

    for name in WF.__all__:
        assert getattr(WF, name) is getattr(wce_torch, name)
