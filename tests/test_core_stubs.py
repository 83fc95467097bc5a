"""fcmlc/_core.pyi against the built extension, so the stubs cannot drift from cpp/src/*.cpp:
the same public names, and for every function and method the parameters (names, order,
defaults) and docstring of pybind11's signature, the same properties (and setters) of
Chi2Kernel, and the types of the module constants. The stub is read from beside the
imported extension, so with an installed fcmlc this also checks that it ships."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from fcmlc import _core

STUB = Path(_core.__file__).with_name("_core.pyi")


def _public(names) -> set[str]:
    return {n for n in names if not n.startswith("_")}


def _norm(text) -> str:
    return " ".join((text or "").split())


@pytest.fixture(scope="module")
def stub() -> ast.Module:
    return ast.parse(STUB.read_text(encoding="utf-8"), filename=str(STUB))


def _defs(body) -> dict[str, list[ast.FunctionDef]]:
    """Functions of a module or class body by name (several for @overload), properties excluded."""
    out: dict[str, list[ast.FunctionDef]] = {}
    for node in body:
        if isinstance(node, ast.FunctionDef) and not _decorators(node) & {"property", "setter"}:
            out.setdefault(node.name, []).append(node)
    return out


def _decorators(node: ast.FunctionDef) -> set[str]:
    names = set()
    for d in node.decorator_list:
        if isinstance(d, ast.Name):
            names.add(d.id)
        elif isinstance(d, ast.Attribute):
            names.add(d.attr)
    return names


def _stub_names(body) -> set[str]:
    names = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return _public(names)


def _split_top(text: str, sep: str) -> list[str]:
    """Split at `sep` outside brackets."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        c = text[i]
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(text[start:])
    return parts


def _pybind_signature(obj, name: str) -> tuple[list[tuple[str, str | None]], dict[str, str], str, str]:
    """[(parameter, default text or None)], {parameter: type}, the return type and the docstring
    body of a pybind11 function."""
    doc = obj.__doc__ or ""
    first, _, body = doc.partition("\n")
    assert first.startswith(name + "("), f"{name}: unexpected pybind11 signature line {first!r}"
    depth, end = 0, len(name)
    for end in range(len(name), len(first)):  # the parenthesis closing the parameter list
        depth += 1 if first[end] in "([" else -1 if first[end] in ")]" else 0
        if depth == 0:
            break
    assert depth == 0, f"{name}: unbalanced pybind11 signature line {first!r}"
    inner = first[len(name) + 1:end]
    params, types = [], {}
    for p in _split_top(inner, ", ") if inner else []:
        pname, _, rest = p.partition(":")
        default = _split_top(rest, " = ")
        params.append((pname.strip(), default[1].strip() if len(default) > 1 else None))
        types[pname.strip()] = default[0].strip()
    return params, types, first[end + 1:].removeprefix(" -> ").strip(), body


# pybind11's type of a parameter -> the stub's annotation (aliases defined in _core.pyi); pybind11 3
# renderings, and pybind11 2's where they differ
PARAM_TYPES = {
    "typing.Annotated[numpy.typing.ArrayLike, numpy.float64]": "_F64",
    "typing.Annotated[numpy.typing.ArrayLike, numpy.int64]": "_I64",
    "typing.SupportsInt | typing.SupportsIndex": "_Int",
    "typing.SupportsFloat | typing.SupportsIndex": "_Float",
    "bool": "bool",
    "str": "str",
    "list": "list[Any]",
    "fcmlc._core.Chi2Kernel": "Chi2Kernel",
    "numpy.ndarray[numpy.float64]": "_F64",
    "numpy.ndarray[numpy.int64]": "_I64",
    "int": "_Int",
    "float": "_Float",
}


def _stub_type(pybind_type: str) -> str:
    if pybind_type.startswith("Optional[") and pybind_type.endswith("]"):
        pybind_type = pybind_type[len("Optional["):-1] + " | None"
    optional = pybind_type.endswith(" | None")
    base = pybind_type.removesuffix(" | None")
    assert base in PARAM_TYPES, f"no stub type known for pybind11's {pybind_type!r}: extend PARAM_TYPES"
    return PARAM_TYPES[base] + (" | None" if optional else "")


def _check_return(qualname: str, pybind: str, stub: str) -> None:
    """The stub's return type is pybind11's (str may be narrowed to Literal; where pybind11 names no
    item types, tuple and object, the stub is free to be more precise)."""
    if pybind in ("tuple", "object"):
        return
    want = pybind.replace("List[", "list[").replace("Tuple[", "tuple[")
    if want.startswith(("numpy.typing.NDArray[", "numpy.ndarray[")):
        want = "NDArray[np." + want.rsplit("numpy.", 1)[1]
    if stub.startswith("Literal[") and want == "str" or stub.startswith("list[Literal[") and want == "list[str]":
        return
    assert stub == want, f"{qualname} -> {stub}, pybind11 -> {pybind}"


def _stub_params(f: ast.FunctionDef) -> list[tuple[str, str | None, str]]:
    """[(parameter, repr of its default or None, kind)] of a stub function."""
    a = f.args
    pos = [(x.arg, "positional") for x in a.posonlyargs + a.args]
    defaults = [None] * (len(pos) - len(a.defaults)) + list(a.defaults)
    out = [(n, None if d is None else repr(ast.literal_eval(d)), k) for (n, k), d in zip(pos, defaults)]
    out += [(x.arg, None if d is None else repr(ast.literal_eval(d)), "keyword")
            for x, d in zip(a.kwonlyargs, a.kw_defaults)]
    assert a.vararg is None and a.kwarg is None, f"{f.name}: *args/**kwargs in the stub"
    return out


def _check_function(qualname: str, runtime, defs: list[ast.FunctionDef], pybind_name: str) -> None:
    params, types, ret, body = _pybind_signature(runtime, pybind_name)
    names = [p for p, _ in params]
    pdefault = dict(params)
    for f in defs:
        got = _stub_params(f)
        assert [n for n, _, _ in got] == names, f"{qualname}: stub parameters {[n for n, _, _ in got]} != {names}"
        for n, d, _ in got:  # every default the stub gives is pybind11's (overloads may drop some)
            assert d is None or d == pdefault[n], f"{qualname}({n}): stub default {d} != {pdefault[n]}"
    # the complete signature (the only def, or the last @overload) has every default, no keyword-only
    full = _stub_params(defs[-1])
    assert [(n, d) for n, d, _ in full] == params, f"{qualname}: stub {full} != pybind11 {params}"
    assert all(k == "positional" for _, _, k in full), f"{qualname}: keyword-only parameters in the full signature"
    a = defs[-1].args
    for arg in a.args:
        if arg.arg == "self":
            continue
        got = ast.unparse(arg.annotation) if arg.annotation else None
        assert got == _stub_type(types[arg.arg]), f"{qualname}({arg.arg}): stub type {got}, pybind11 {types[arg.arg]}"
    _check_return(qualname, ret, ast.unparse(defs[-1].returns) if defs[-1].returns else "None")
    docs = [_norm(ast.get_docstring(f, clean=True)) for f in defs]
    if _norm(body):
        assert _norm(body) in docs, f"{qualname}: no stub docstring equals pybind11's:\n{_norm(body)}"
    assert all(d in ("", _norm(body)) for d in docs), f"{qualname}: a stub docstring differs from pybind11's"
    if len(defs) > 1:
        assert all("overload" in _decorators(f) for f in defs), f"{qualname}: several defs without @overload"


def test_stub_ships_beside_the_extension():
    assert STUB.is_file(), f"missing {STUB}"
    assert STUB.with_name("py.typed").is_file(), "the package must carry the PEP 561 marker py.typed"


def test_stub_has_the_public_names_of_the_module(stub):
    runtime = _public(dir(_core))
    got = _stub_names(stub.body)
    assert got == runtime, f"only in the stub: {sorted(got - runtime)}; only in _core: {sorted(runtime - got)}"
    assert _norm(ast.get_docstring(stub)) == _norm(_core.__doc__)


def test_stub_constants_have_the_runtime_types(stub):
    consts = {n.target.id: n.annotation for n in stub.body
              if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name) and not n.target.id.startswith("_")}
    assert consts
    for name, ann in consts.items():
        value = getattr(_core, name)
        assert not callable(value), name
        assert isinstance(ann, ast.Name) and ann.id == type(value).__name__, \
            f"{name}: stub type {ast.unparse(ann)}, runtime {type(value).__name__}"


def test_stub_functions_match_pybind_signatures(stub):
    defs = _defs(stub.body)
    assert defs
    for name, fs in defs.items():
        if name.startswith("_"):
            continue
        runtime = getattr(_core, name)
        assert callable(runtime) and not inspect.isclass(runtime), name
        _check_function(name, runtime, fs, name)


def test_stub_classes_match_pybind(stub):
    classes = [n for n in stub.body if isinstance(n, ast.ClassDef)]
    assert {c.name for c in classes} == {n for n in _public(dir(_core)) if inspect.isclass(getattr(_core, n))}
    for cls in classes:
        runtime = getattr(_core, cls.name)
        assert _norm(ast.get_docstring(cls)) == _norm(runtime.__doc__), f"{cls.name}: class docstring"
        assert _stub_names(cls.body) == _public(dir(runtime)), \
            f"{cls.name}: stub {sorted(_stub_names(cls.body))} != runtime {sorted(_public(dir(runtime)))}"
        defs = _defs(cls.body)
        assert "__init__" in defs, f"{cls.name}: no __init__ in the stub"
        for name, fs in defs.items():
            if name.startswith("_") and name != "__init__":
                continue
            member = inspect.getattr_static(runtime, name)
            assert not isinstance(member, property), f"{cls.name}.{name} is a property at runtime"
            _check_function(f"{cls.name}.{name}", getattr(runtime, name), fs, name)
        props = [n for n in cls.body if isinstance(n, ast.FunctionDef) and "property" in _decorators(n)]
        setters = {n.name for n in cls.body if isinstance(n, ast.FunctionDef) and "setter" in _decorators(n)}
        for p in props:
            member = inspect.getattr_static(runtime, p.name)
            assert isinstance(member, property), f"{cls.name}.{p.name} is not a property at runtime"
            assert (p.name in setters) == (member.fset is not None), f"{cls.name}.{p.name}: setter mismatch"
            assert _norm(ast.get_docstring(p)) == _norm(member.__doc__), f"{cls.name}.{p.name}: docstring"
            ret = (member.fget.__doc__ or "").partition("\n")[0].rpartition(" -> ")[2].strip()
            _check_return(f"{cls.name}.{p.name}", ret, ast.unparse(p.returns) if p.returns else "None")
