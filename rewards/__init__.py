"""The reward-file contract: what a reward file may contain, and how it is checked, loaded, confined and called.

A reward file `rewards/<suite>/<task_name>.py` defines `compute_reward(state, info) -> float` (the `state` and
`info` schema is in rewards/README.md). It may import only math, numpy and numpy.linalg, and use only numpy's
vetted pure functions. Reward files are written by an LLM, so they are treated as hostile:

- Confinement, enforced as the code runs. The file is compiled with RestrictedPython, which turns every attribute
  read, subscript, iteration, unpacking, item write and augmented assignment into a call to a guard defined here.
  The guards allow only what the contract allows (an allow-list of attributes per type; modules are stand-ins that
  hold only the vetted names), the builtins are a short safe list, and `import` hands out the stand-ins. Load-time
  code (constants, default arguments, decorators) runs under the same guards. An AST pre-check runs first only to
  give friendlier messages (`line 3 imports 'os'`); the guards are the security boundary.
- Nothing carries over between calls: each call gets its own copies of state and info, and what the file built
  while loading (constants, default arguments, closures) cannot be changed by a call (freeze_load_time_values,
  carried_state), which also stops a memory bomb spread over many calls.
- Limits per call (`call_reward`): CPU time and address space, for a dedicated process (an env worker or a
  validation process), never the trainer. See `run_limited` for how a bomb is stopped and how the parent tells
  that its child died inside reward code.
- Secrets: `environment_without_secrets` starts such a process with no API keys or tokens in its environment.

This module imports only the standard library, numpy and RestrictedPython (nothing of ours, no torch, no LIBERO),
so a reward process starts in about a second.
"""

import ast
import builtins
import contextlib
import functools
import hashlib
import json
import math
import numbers
import operator
import os
import pickle
import resource
import signal
import sys
import threading
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np
from RestrictedPython import compile_restricted_exec
from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence

REWARDS_DIR = Path(__file__).resolve().parent
DEFAULT_CPU_SECONDS = 5.0  # --reward-cpu-seconds: a dense reward takes well under a millisecond per call
DEFAULT_MEMORY_MB = 1024  # --reward-memory-mb: new address space a single call may take
# A loop inside one C call (sum(range(10**15))) never returns to the interpreter, so the clean exception cannot be
# raised in it; the kernel then kills the process after this much more CPU time (see run_limited).
CPU_KILL_GRACE_SECONDS = 3.0


# ----------------------------------------------------------------------------------------------------------
# What a reward file may use

ALLOWED_MODULES = ("math", "numpy", "numpy.linalg")
# numpy is also a door to the file system and the process (np.lib.npyio.os, np.load, np.ctypeslib, ...), so a
# reward file reaches only these pure functions and constants through it.
NUMPY_API = frozenset("""
    abs absolute all allclose any arccos arcsin arctan arctan2 arange argmax argmin argsort array asarray atleast_1d
    ceil clip concatenate cos cosh count_nonzero cross cumsum deg2rad degrees diff dot e einsum exp expm1 eye fabs
    float32 float64 floor full hypot inf inner int64 interp isclose isfinite isinf isnan linalg linspace log log10
    log1p log2 logical_and logical_not logical_or matmul max maximum mean median min minimum nan ones ones_like outer
    pi power prod rad2deg radians round sign sin sinh sort sqrt square stack std sum tan tanh tile trace transpose
    var vstack hstack where zeros zeros_like
""".split())
LINALG_API = frozenset("norm det inv solve eig eigh svd pinv matrix_rank".split())
MATH_API = frozenset(name for name in dir(math) if not name.startswith("_"))  # all pure functions and constants

# Attributes a reward file may read, by the type of the value (looked up along the type's MRO). Anything else is
# refused: functions, classes, generators, exceptions and modules have no readable attribute at all, so nothing
# leads from a value to frames, globals, the interpreter or the file system.
ARRAY_ATTRIBUTES = frozenset("""
    T all any argmax argmin argsort astype clip conj copy cumprod cumsum diagonal dot dtype flatten imag item max
    mean min ndim nonzero prod ptp ravel real repeat reshape round searchsorted shape size sort squeeze std sum
    swapaxes tolist trace transpose var
""".split())
STR_ATTRIBUTES = frozenset("""
    capitalize casefold center count endswith find index isalnum isalpha isdigit islower isnumeric isspace isupper
    join ljust lower lstrip partition removeprefix removesuffix replace rfind rindex rjust rpartition rsplit rstrip
    split splitlines startswith strip swapcase title upper zfill
""".split())  # never format/format_map: a template string walks attributes ("{0.__class__...}") unguarded
NUMBER_ATTRIBUTES = frozenset("real imag conjugate is_integer bit_length as_integer_ratio".split())
SAFE_ATTRIBUTES = {
    np.ndarray: ARRAY_ATTRIBUTES,
    np.generic: ARRAY_ATTRIBUTES,  # numpy scalars (np.float64, np.bool_, ...)
    np.dtype: frozenset("name kind itemsize char".split()),
    np.ufunc: frozenset("reduce accumulate outer".split()),  # np.maximum.reduce(...)
    str: STR_ATTRIBUTES,
    dict: frozenset("get items keys values copy pop popitem setdefault update clear".split()),
    list: frozenset("append extend insert pop remove index count copy reverse sort clear".split()),
    tuple: frozenset("count index".split()),
    set: frozenset("""add discard remove pop clear copy union intersection difference symmetric_difference update
                      issubset issuperset isdisjoint""".split()),
    frozenset: frozenset(
        "copy union intersection difference symmetric_difference issubset issuperset isdisjoint".split()
    ),
    int: NUMBER_ATTRIBUTES,
    float: NUMBER_ATTRIBUTES,
    complex: NUMBER_ATTRIBUTES,
}
# Names refused everywhere, for a clear message: each opens a way out of the contract on some type.
ESCAPE_ATTRIBUTES = frozenset("""
    format format_map tofile dump dumps ctypes data view tobytes tostring getfield setfield setflags flags base
    itemset newbyteorder resize gi_frame gi_code gi_yieldfrom cr_frame cr_code cr_await ag_frame ag_code f_back
    f_globals f_locals f_builtins f_code f_trace tb_frame tb_next mro
""".split())
SUBSCRIPTABLE_TYPES = (dict, list, tuple, str, range, np.ndarray, np.generic)
WRITABLE_TYPES = (list, dict, np.ndarray)  # item writes only; the state and info a call gets are its own copies
# Methods (of the allow-listed ones) that change their object in place: refused on what the file built at load time.
MUTATING_METHODS = frozenset("""
    append extend insert pop remove reverse sort clear update setdefault popitem add discard
""".split())
SAFE_BUILTIN_NAMES = """
    abs all any bool complex dict divmod enumerate filter float frozenset int isinstance len list map max min pow
    range reversed round set slice sorted str sum tuple zip ArithmeticError AssertionError Exception
    FloatingPointError IndexError KeyError LookupError OverflowError TypeError ValueError ZeroDivisionError
""".split()  # not: type object getattr vars dir open eval exec compile globals locals print format id iter ...
SAFE_BUILTINS = {name: getattr(builtins, name) for name in SAFE_BUILTIN_NAMES}
# Names the pre-check refuses with a clear message (at run time they are simply not defined).
FORBIDDEN_NAMES = frozenset("""
    open exec eval compile globals locals vars getattr setattr delattr hasattr input breakpoint help exit quit
    memoryview type object classmethod staticmethod property super dir print format id iter next BaseException
""".split())


class RewardFileError(Exception):
    """A reward file that is missing, breaks the contract, fails, or exceeds a limit; the message is one line
    naming the file (and, at run time, the step, the env and the reason)."""


class ContractViolation(BaseException):
    """Raised by the guards inside reward code. A BaseException, and not among the builtins a reward file can name,
    so that `except Exception:` in the file cannot swallow it."""


class CPULimitExceeded(BaseException):
    """Raised between bytecodes when a reward call uses up its CPU time; as uncatchable as ContractViolation."""


# ----------------------------------------------------------------------------------------------------------
# The guards RestrictedPython's compiled code calls


class VettedModule:
    """What `import numpy` (or math, numpy.linalg) gives a reward file: only the vetted names, however they are
    asked for (`np.x`, an alias `L = np.linalg; L.x`, or `from numpy import x`, which bypasses _getattr_)."""

    __slots__ = ("vetted_name", "vetted_members")

    def __init__(self, name: str, members: dict):
        object.__setattr__(self, "vetted_name", name)
        object.__setattr__(self, "vetted_members", members)

    def __getattribute__(self, attr):
        if attr.startswith("__") and attr.endswith("__"):  # Python's own probes (isinstance, repr); reward code
            return object.__getattribute__(self, attr)  # cannot ask: it never names "_" attributes (compile + guard)
        members = object.__getattribute__(self, "vetted_members")
        if attr in members:
            return members[attr]
        name = object.__getattribute__(self, "vetted_name")
        raise ContractViolation(f"uses {name}.{attr}, which is not part of the reward-file contract")

    def __setattr__(self, attr, value):
        raise ContractViolation(f"assigns to {object.__getattribute__(self, 'vetted_name')}.{attr}")

    def __repr__(self):
        return f"<module {object.__getattribute__(self, 'vetted_name')} (vetted names only)>"


LINALG_MODULE = VettedModule("numpy.linalg", {name: getattr(np.linalg, name) for name in LINALG_API})
NUMPY_MODULE = VettedModule(
    "numpy", {**{name: getattr(np, name) for name in NUMPY_API if name != "linalg"}, "linalg": LINALG_MODULE}
)
MATH_MODULE = VettedModule("math", {name: getattr(math, name) for name in MATH_API})
VETTED_MODULES = {"math": MATH_MODULE, "numpy": NUMPY_MODULE, "numpy.linalg": LINALG_MODULE}


def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
    """`import` inside reward code: the stand-ins of math, numpy and numpy.linalg, nothing else."""
    if isinstance(fromlist, list) and not fromlist and not level and name.startswith("numpy."):
        # numpy's C code imports its helpers lazily (ndarray.sum -> numpy.core._methods) through the builtins of the
        # calling frame, the reward's. C callers pass an empty list, which reward code cannot, and read the module
        # from sys.modules themselves: import it for them and hand nothing back.
        builtins.__import__(name, None, None, fromlist, 0)
        return None
    if level or name not in VETTED_MODULES:
        raise ContractViolation(f"imports {name!r}; reward files may import only {', '.join(ALLOWED_MODULES)}")
    # `import numpy.linalg` binds `numpy`; `from numpy.linalg import norm` needs numpy.linalg itself.
    return VETTED_MODULES[name] if fromlist else VETTED_MODULES[name.split(".")[0]]


def guarded_getattr(obj, name, frozen: dict = {}):
    """`obj.name` in reward code. `frozen`: what the file built at load time (see freeze_load_time_values)."""
    if not isinstance(name, str) or name.startswith("_"):
        raise ContractViolation(f"reads the attribute {name!r}; names starting with '_' are never allowed")
    if name in MUTATING_METHODS and id(obj) in frozen:
        raise ContractViolation(changes_frozen(obj, f".{name}()"))
    if isinstance(obj, VettedModule):
        return getattr(obj, name)  # the stand-in refuses anything outside the vetted API
    if isinstance(obj, tuple) and name in getattr(type(obj), "_fields", ()):
        return getattr(obj, name)  # a named tuple's fields, e.g. np.linalg.eigh(m).eigenvalues
    for kind in type(obj).__mro__:
        allowed = SAFE_ATTRIBUTES.get(kind)
        if allowed is not None:
            if name in allowed:
                return getattr(obj, name)
            break
    why = " (it can lead out of the contract: files, raw memory, frames or format templates)"
    raise ContractViolation(
        f"reads .{name} of a {type(obj).__name__}, which reward files may not{why if name in ESCAPE_ATTRIBUTES else ''}"
    )


def guarded_getitem(obj, key):
    """`obj[key]` in reward code: containers and arrays only (not classes, whose [] makes type aliases)."""
    if not isinstance(obj, SUBSCRIPTABLE_TYPES):
        raise ContractViolation(f"subscripts a {type(obj).__name__}, which reward files may not")
    return obj[key]


def guarded_getiter(obj):
    return iter(obj)


class ItemWriter:
    """What `_write_` returns: lets `x[k] = v` and `del x[k]` through, refuses `x.attr = v` (on an array, that
    could change its dtype, shape or memory)."""

    __slots__ = ("target",)

    def __init__(self, target):
        object.__setattr__(self, "target", target)

    def __setitem__(self, key, value):
        object.__getattribute__(self, "target")[key] = value

    def __delitem__(self, key):
        del object.__getattribute__(self, "target")[key]

    def __setattr__(self, attr, value):
        raise ContractViolation(f"assigns to the attribute {attr!r}; reward files may only write items")

    def __delattr__(self, attr):
        raise ContractViolation(f"deletes the attribute {attr!r}; reward files may only write items")


def guarded_write(obj, frozen: dict = {}):
    if not isinstance(obj, WRITABLE_TYPES):
        raise ContractViolation(f"changes a {type(obj).__name__}; reward files may write only lists, dicts and arrays")
    if id(obj) in frozen:
        raise ContractViolation(changes_frozen(obj, "an item of"))
    return ItemWriter(obj)


INPLACE_OPERATORS = {
    "+=": operator.iadd,
    "-=": operator.isub,
    "*=": operator.imul,
    "/=": operator.itruediv,
    "//=": operator.ifloordiv,
    "%=": operator.imod,
    "**=": operator.ipow,
    "@=": operator.imatmul,
    "<<=": operator.ilshift,
    ">>=": operator.irshift,
    "&=": operator.iand,
    "|=": operator.ior,
    "^=": operator.ixor,
}


def guarded_inplacevar(op: str, target, value, frozen: dict = {}):
    """`x += y` in reward code (RestrictedPython allows it on plain names only); on a list or an array it changes
    the object in place."""
    if id(target) in frozen and isinstance(target, WRITABLE_TYPES + (set,)):
        raise ContractViolation(changes_frozen(target, f"`{op}` on"))
    return INPLACE_OPERATORS[op](target, value)


def guarded_apply(function, *args, **kwargs):
    """`f(*args, **kwargs)` in reward code; what f may be is already limited by the other guards."""
    return function(*args, **kwargs)


def restricted_globals(frozen: dict) -> dict:
    """A fresh module namespace for one reward file: safe builtins, the guarded import, and the guards, which
    refuse to change what is in `frozen` (filled once the file has loaded)."""
    return {
        "__builtins__": {**SAFE_BUILTINS, "__import__": guarded_import},
        "__name__": "reward_file",
        "_getattr_": functools.partial(guarded_getattr, frozen=frozen),
        "_getitem_": guarded_getitem,
        "_getiter_": guarded_getiter,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_write_": functools.partial(guarded_write, frozen=frozen),
        "_inplacevar_": functools.partial(guarded_inplacevar, frozen=frozen),
        "_apply_": guarded_apply,
        # no __metaclass__ and no __build_class__: a class statement fails; no _print_: print fails
    }


def freeze_load_time_values(namespace: dict, frozen: dict) -> None:
    """Put in `frozen` every container the file built while loading (module constants, default arguments,
    closure cells), and make its arrays read-only, so that no call can keep anything for the next one: neither
    a reward that depends on its history nor a memory bomb spread over many calls, each within its limit."""
    pending = [value for name, value in namespace.items() if not name.startswith("_")]
    while pending:
        value = pending.pop()
        if id(value) in frozen:
            continue
        if isinstance(value, np.ndarray):
            value.flags.writeable = False  # also stops numpy's out= arguments, which no guard sees
            if value.dtype == object:
                pending.extend(value.flat)
        elif isinstance(value, (list, tuple, set, frozenset)):
            pending.extend(value)
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, types.FunctionType) and value.__globals__ is namespace:
            pending.extend(value.__defaults__ or ())
            pending.extend((value.__kwdefaults__ or {}).values())
            pending.extend(cell.cell_contents for cell in value.__closure__ or () if cell_is_set(cell))
        elif hasattr(type(value), "__next__"):
            raise ContractViolation("keeps an iterator built at load time, which would carry state between calls")
        else:
            continue  # numbers, strings, modules, numpy's own functions: nothing a call could change
        frozen[id(value)] = value  # held here too, so that its id stays its own


def cell_is_set(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def changes_frozen(obj, how: str) -> str:
    return (
        f"changes {how} a {type(obj).__name__} built when the file was loaded (a module-level constant, a default "
        "argument or a closure); a call must keep nothing for the next one: copy it first (list(x), dict(x), "
        "x.copy())"
    )


# ----------------------------------------------------------------------------------------------------------
# Checking and compiling a file (never runs it)


def check_imports(tree: ast.Module, filename: str) -> dict:
    """{local name: module} of the file's imports; a RewardFileError for any import outside the contract."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name not in ALLOWED_MODULES:
                    raise RewardFileError(
                        f"{filename}: line {node.lineno} imports {alias.name!r}; only {', '.join(ALLOWED_MODULES)} "
                        "are allowed"
                    )
                top = alias.name.split(".")[0]  # `import numpy.linalg` binds numpy
                aliases[alias.asname or top] = alias.name if alias.asname else top
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module not in ALLOWED_MODULES or node.level:
                raise RewardFileError(
                    f"{filename}: line {node.lineno} imports {'.' * node.level + module!r}; only "
                    f"{', '.join(ALLOWED_MODULES)} are allowed"
                )
            for alias in node.names:
                full = f"{module}.{alias.name}"
                if full in ALLOWED_MODULES:
                    aliases[alias.asname or alias.name] = full
                elif alias.name not in module_api(module):
                    raise RewardFileError(
                        f"{filename}: line {node.lineno} imports {full!r}, which reward files may not use"
                    )
    return aliases


def module_api(module: str) -> frozenset:
    return {"math": MATH_API, "numpy": NUMPY_API, "numpy.linalg": LINALG_API}[module]


def precheck_reward_source(source: str, filename: str) -> None:
    """Readable first messages for the common mistakes (`line 3 imports 'os'`). Not the security boundary: the
    run-time guards are, and they hold without this check (tests/test_reward_sandbox.py runs both ways)."""
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as error:
        raise RewardFileError(f"{filename}: syntax error at line {error.lineno}: {error.msg}") from None
    modules = check_imports(tree, filename)

    def module_of(node):  # "numpy.linalg" for `np.linalg` when np is the imported numpy; else None
        if isinstance(node, ast.Name):
            return modules.get(node.id)
        if isinstance(node, ast.Attribute) and module_of(node.value) is not None:
            full = f"{module_of(node.value)}.{node.attr}"
            return full if full in ALLOWED_MODULES else None
        return None

    for node in ast.walk(tree):
        line = getattr(node, "lineno", "?")
        if isinstance(node, ast.Attribute):
            if node.attr.startswith("_") or node.attr in ESCAPE_ATTRIBUTES:
                raise RewardFileError(f"{filename}: line {line} reads the forbidden attribute {node.attr!r}")
            if not isinstance(node.ctx, ast.Load):
                raise RewardFileError(f"{filename}: line {line} assigns to the attribute {node.attr!r}")
            owner = module_of(node.value)
            if owner is not None and node.attr not in module_api(owner):
                raise RewardFileError(f"{filename}: line {line} uses {owner}.{node.attr}, which reward files may not")
        elif isinstance(node, ast.Name) and (node.id in FORBIDDEN_NAMES or node.id.startswith("__")):
            raise RewardFileError(f"{filename}: line {line} uses the forbidden name {node.id!r}")
        elif isinstance(node, ast.ExceptHandler) and node.type is None:
            raise RewardFileError(
                f"{filename}: line {line} has a bare `except:`; name the exceptions, e.g. "
                "`except (KeyError, ValueError):`"
            )
        elif isinstance(
            node, (ast.Global, ast.Nonlocal, ast.ClassDef, ast.AsyncFunctionDef, ast.Yield, ast.YieldFrom, ast.Await)
        ):
            raise RewardFileError(f"{filename}: line {line} uses {type(node).__name__}, which reward files may not")
    for node in tree.body:
        if not isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.Assign, ast.AnnAssign, ast.Expr)):
            raise RewardFileError(
                f"{filename}: line {node.lineno}: top-level {type(node).__name__} statements are not allowed "
                "(only imports, constants and functions)"
            )
        if isinstance(node, ast.Expr) and not isinstance(node.value, ast.Constant):
            raise RewardFileError(f"{filename}: line {node.lineno}: top-level expressions are not allowed")
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    if "compute_reward" not in functions or len(functions["compute_reward"].args.args) != 2:
        raise RewardFileError(f"{filename}: must define `def compute_reward(state, info) -> float` at top level")


def restricted_code(source: str, filename: str) -> types.CodeType:
    """Compile with RestrictedPython: every attribute, subscript, iteration and write goes through the guards."""
    result = compile_restricted_exec(source, filename)
    if result.errors:
        errors = [error.replace("Line ", "line ", 1).rstrip(".") for error in result.errors]
        raise RewardFileError(f"{filename}: " + "; ".join(errors))
    return result.code


def check_reward_source(source: str, filename: str = "<reward>") -> types.CodeType:
    """The file checked against the contract and compiled under RestrictedPython; never runs it. Use this where
    reward code must not run (the trainer): it fails fast on a bad file, and the workers compile their own copy."""
    precheck_reward_source(source, filename)
    return restricted_code(source, filename)


# ----------------------------------------------------------------------------------------------------------
# Loading and calling


@dataclass
class RewardFn:
    """A loaded reward file: `fn` is its compute_reward, compiled under the guards. Call it through call_reward
    (limits, result check, one-line errors); calling it directly applies the guards but no limits."""

    fn: Callable
    path: str
    sha256: str
    source: str = ""
    namespace: dict = field(default_factory=dict, repr=False)  # the file's module globals ...
    loaded_names: dict = field(default_factory=dict, repr=False)  # ... as they were once it had loaded
    loaded_arrays: list = field(default_factory=list, repr=False)  # (array, its bytes) built while loading

    def __call__(self, state: dict, info: dict):
        return self.fn(state, info)


def compile_reward_fn(
    source: str,
    filename: str = "<reward>",
    *,
    cpu_seconds: Optional[float] = None,
    memory_mb: Optional[float] = None,
    in_reward=None,
    precheck: bool = True,
) -> RewardFn:
    """Check `source`, then run its top level (imports, constants, defaults, decorators) under the guards and,
    when given, the limits of one call. Run this in the process that will call the reward, not in the trainer.
    `precheck=False` skips the readable AST pre-check (for tests that show the guards hold alone)."""
    code = check_reward_source(source, filename) if precheck else restricted_code(source, filename)
    frozen = {}
    namespace = restricted_globals(frozen)
    try:
        run_limited(exec, (code, namespace), cpu_seconds, memory_mb, in_reward)
        freeze_load_time_values(namespace, frozen)
    except (Exception, ContractViolation, CPULimitExceeded) as error:
        reason = describe_failure(error, filename, source, cpu_seconds, memory_mb)
        raise RewardFileError(f"{filename} {reason} while loading the file") from None
    fn = namespace.get("compute_reward")
    if not isinstance(fn, types.FunctionType):
        raise RewardFileError(f"{filename}: must define `def compute_reward(state, info) -> float` at top level")
    loaded_names = {name: value for name, value in namespace.items() if not name.startswith("_")}
    # (an object array's bytes are its elements' addresses: replacing an element changes them too)
    loaded_arrays = [(value, value.tobytes()) for value in frozen.values() if isinstance(value, np.ndarray)]
    sha256 = hashlib.sha256(source.encode()).hexdigest()
    return RewardFn(fn, filename, sha256, source, namespace, loaded_names, loaded_arrays)


def load_reward_fn(path, **limits) -> RewardFn:
    """Read and compile the reward file at `path` (keyword arguments: those of compile_reward_fn)."""
    path = Path(path)
    if not path.is_file():
        raise RewardFileError(f"no reward file at {path}")
    return compile_reward_fn(path.read_text(), str(path), **limits)


def call_reward(
    reward_fn: RewardFn,
    state: dict,
    info: dict,
    *,
    env_index: Optional[int] = None,
    cpu_seconds: Optional[float] = DEFAULT_CPU_SECONDS,
    memory_mb: Optional[float] = DEFAULT_MEMORY_MB,
    in_reward=None,
    where: Optional[str] = None,
) -> float:
    """compute_reward(state, info) under the per-call limits, as a finite float, or one RewardFileError naming
    the file, the step, the env and the reason (an exception, a contract violation, a limit, a non-finite number
    or a non-number). Only in a dedicated process (an env worker, a validation process): the limits act on the
    whole process. The reward gets its own copies of state and info, so it can change neither the caller's data
    nor what later calls see. `where` replaces "at step N (env i)" in messages (e.g. "on the state of ...").
    `in_reward`: see run_limited. None for a limit disables it."""
    if where is None:
        where = f"at step {state.get('step', '?')}" + (f" (env {env_index})" if env_index is not None else "")
    own_state, own_info = fresh_copy(state), fresh_copy(info)
    try:
        value = run_limited(reward_fn.fn, (own_state, own_info), cpu_seconds, memory_mb, in_reward)
    except (Exception, ContractViolation, CPULimitExceeded) as error:
        reason = describe_failure(error, reward_fn.path, reward_fn.source, cpu_seconds, memory_mb)
        keys = f"; {describe_state_keys(state)}" if reason.startswith("raised") else ""  # e.g. for a KeyError
        raise RewardFileError(f"{reward_fn.path} {reason} {where}{keys}") from None
    carried = carried_state(reward_fn)
    if carried:
        raise RewardFileError(
            f"{reward_fn.path} broke the reward-file contract: it {carried} {where}; a call must keep nothing for "
            "the next one"
        )
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        shape = f" of shape {value.shape}" if isinstance(value, np.ndarray) else ""
        raise RewardFileError(
            f"{reward_fn.path} returned a {type(value).__name__}{shape} {where}; compute_reward must return one "
            "float (e.g. `return float(reward)`)"
        )
    reward = float(value)
    if not math.isfinite(reward):
        raise RewardFileError(
            f"{reward_fn.path} returned {reward} {where}; compute_reward must return a finite float (guard "
            "divisions, logs and square roots, e.g. with max(distance, 1e-6))"
        )
    return reward


def carried_state(reward_fn: RewardFn) -> str:
    """What a call changed that the next call would see, in words, or "". The guards refuse changes to what the
    file built at load time; two ways around them are checked here after each call: `global x; x = ...`, and
    numpy functions writing through out= (some, e.g. np.cumsum in numpy 1.26, ignore an array's read-only flag)."""
    now = {name: value for name, value in reward_fn.namespace.items() if not name.startswith("_")}
    names = set(now) | set(reward_fn.loaded_names)
    rebound = sorted(name for name in names if now.get(name, MISSING) is not reward_fn.loaded_names.get(name, MISSING))
    if rebound:
        return f"changed the module-level name(s) {', '.join(rebound)} (`global`)"
    if any(array.tobytes() != loaded for array, loaded in reward_fn.loaded_arrays):
        return "changed an array built when the file was loaded (e.g. through a numpy out= argument)"
    return ""


MISSING = object()


def fresh_copy(value):
    """A copy of a state or info dict: containers and arrays copied, immutable leaves shared."""
    if isinstance(value, dict):
        return {key: fresh_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [fresh_copy(item) for item in value]
    if isinstance(value, tuple):
        return tuple(fresh_copy(item) for item in value)
    if isinstance(value, np.ndarray):
        return value.copy()
    if value is None or isinstance(value, (str, bytes, numbers.Number, np.generic)):
        return value
    raise TypeError(f"state and info hold only dicts, lists, tuples, arrays, numbers and strings, not {type(value)}")


def describe_failure(error: BaseException, filename: str, source: str, cpu_seconds, memory_mb) -> str:
    """`raised KeyError: 'x' (line 12: bowl = ...)`, or the contract or limit it broke, at the file's own line."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if frame.filename == filename]
    at = ""
    if frames:
        lines = source.splitlines()
        lineno = frames[-1].lineno
        at = f" (line {lineno}: {lines[lineno - 1].strip()})" if 0 < lineno <= len(lines) else f" (line {lineno})"
    if isinstance(error, ContractViolation):
        return f"broke the reward-file contract: it {error}{at}"
    if isinstance(error, CPULimitExceeded):
        return f"exceeded its CPU-time limit of {cpu_seconds:g} s per call (--reward-cpu-seconds){at}"
    if isinstance(error, MemoryError) and memory_mb is not None:
        return f"exceeded its memory limit of {memory_mb:g} MB per call (--reward-memory-mb){at}"
    text = str(error)
    return f"raised {type(error).__name__}" + (f": {text[:300]}" if text else "") + at


def describe_state_keys(state: dict) -> str:
    objects = ", ".join(sorted(state.get("objects", {})))
    return f"state keys {sorted(state)}; objects [{objects}]"


# ----------------------------------------------------------------------------------------------------------
# Limits per call


def address_space_bytes() -> Optional[int]:
    """This process's current virtual address-space size (Linux), or None where /proc is missing."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return None


def run_limited(
    function: Callable, args: tuple, cpu_seconds: Optional[float], memory_mb: Optional[float], in_reward=None
):
    """function(*args) under a CPU-time and a memory limit, both restored afterwards (None disables a limit).

    Only in a dedicated process's main thread: the limits and signal handlers are the whole process's.
    - CPU: RLIMIT_CPU's soft limit is set to the CPU time used so far plus `cpu_seconds` (rounded up to a whole
      second, the kernel's unit), and SIGXCPU's handler raises CPULimitExceeded between bytecodes, which stops a
      pure-Python loop with a clear message while the process lives on (also 10**10**10: CPython checks for
      signals inside big-int arithmetic). A loop inside one C call that never checks (sum(range(10**15))) gives
      no handler a chance to run: for that, a CPU-time timer (ITIMER_PROF, with SIGPROF's default action) kills
      the process CPU_KILL_GRACE_SECONDS of CPU time later. Its exit code is then -SIGPROF, which
      reward_process_died turns into the message.
    - Memory: RLIMIT_AS is set to the current address-space size plus `memory_mb`, so an allocation bomb
      ([0] * 10**10, np.zeros(10**11), 'a' * 10**11) raises MemoryError at once (Linux; elsewhere no limit).
    - `in_reward`: any object with a writable `.value` shared with the parent, e.g.
      `multiprocessing.get_context("spawn").Value("b", 0, lock=False)` passed to the child at its start. It is 1
      while reward code runs, so a parent whose child died, or missed a deadline, knows the reward was the cause.
    """
    limits = start_limits(cpu_seconds, memory_mb, in_reward)
    try:
        result = function(*args)
        limits["armed"] = False
    finally:
        # The first statement makes no call, so no signal handler runs before it: a SIGXCPU that lands from here
        # on cannot raise inside the restore (with a context manager, it could, in __exit__ before our finally).
        limits["armed"] = False
        stop_limits(limits)
    return result


def start_limits(cpu_seconds: Optional[float], memory_mb: Optional[float], in_reward) -> dict:
    limits = {"armed": True, "cpu_seconds": cpu_seconds, "in_reward": in_reward}
    if cpu_seconds is not None or memory_mb is not None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("reward limits need the main thread of a dedicated process (they use signals)")
        limits["cpu"], limits["as"] = resource.getrlimit(resource.RLIMIT_CPU), resource.getrlimit(resource.RLIMIT_AS)
    if cpu_seconds is not None:

        def on_cpu_limit(signum, frame):
            if limits["armed"]:
                raise CPULimitExceeded()

        usage = resource.getrusage(resource.RUSAGE_SELF)
        soft = math.ceil(usage.ru_utime + usage.ru_stime + cpu_seconds)
        limits["xcpu_handler"] = signal.signal(signal.SIGXCPU, on_cpu_limit)
        resource.setrlimit(resource.RLIMIT_CPU, (lower_limit(soft, limits["cpu"]), limits["cpu"][1]))
        limits["prof_handler"] = signal.signal(signal.SIGPROF, signal.SIG_DFL)
        limits["prof_timer"] = signal.setitimer(signal.ITIMER_PROF, cpu_seconds + CPU_KILL_GRACE_SECONDS)
    current = address_space_bytes() if memory_mb is not None else None
    if current is not None:
        soft = current + int(memory_mb * 2**20)
        with contextlib.suppress(ValueError, OSError):  # a platform without RLIMIT_AS: no memory limit
            resource.setrlimit(resource.RLIMIT_AS, (lower_limit(soft, limits["as"]), limits["as"][1]))
    if in_reward is not None:
        in_reward.value = 1
    return limits


def stop_limits(limits: dict) -> None:
    limits["armed"] = False
    if "as" in limits:
        resource.setrlimit(resource.RLIMIT_AS, limits["as"])  # first: restoring the rest may allocate
    if limits["cpu_seconds"] is not None:
        signal.setitimer(signal.ITIMER_PROF, *limits["prof_timer"])
        signal.signal(signal.SIGPROF, limits["prof_handler"])
        resource.setrlimit(resource.RLIMIT_CPU, limits["cpu"])
        signal.signal(signal.SIGXCPU, limits["xcpu_handler"])
    if limits["in_reward"] is not None:
        limits["in_reward"].value = 0


def lower_limit(wanted: int, old: tuple) -> int:
    """`wanted`, but never above a soft or hard limit the user already set (e.g. with ulimit)."""
    for bound in old:
        if bound != resource.RLIM_INFINITY:
            wanted = min(wanted, bound)
    return wanted


def reward_process_died(
    path: str,
    exitcode: Optional[int],
    *,
    where: str = "",
    cpu_seconds: Optional[float] = DEFAULT_CPU_SECONDS,
    memory_mb: Optional[float] = DEFAULT_MEMORY_MB,
) -> RewardFileError:
    """The one-line error for a child that died (or missed the caller's deadline, exitcode None) while its
    `in_reward` flag was set: the reward file, not the simulator, is at fault."""
    if exitcode == -signal.SIGPROF:
        reason = (
            f"was killed after {cpu_seconds + CPU_KILL_GRACE_SECONDS:g} s of CPU time inside one C-level call that "
            f"never returned to Python (e.g. sum(range(10**15))); its limit is {cpu_seconds:g} s per call "
            "(--reward-cpu-seconds)"
        )
    elif exitcode == -signal.SIGXCPU:
        reason = "was killed by the process's own CPU-time limit (ulimit -t)"
    elif exitcode is None:
        reason = "did not return before the caller's deadline"
    else:
        reason = f"was running when its process died (exit code {exitcode})"
    limits = f"; limits per call: {cpu_seconds:g} CPU seconds, {memory_mb:g} MB" if exitcode != -signal.SIGPROF else ""
    return RewardFileError(f"{path} {reason}{(' ' + where) if where else ''}{limits}")


def validation_main() -> None:
    """Main of gen_reward.py's validation process: `python -c "import rewards; rewards.validation_main()"`, started
    with an environment from environ_without_secrets.

    Reads one pickled job from stdin (written by the trusted parent): source, filename, states, infos, labels,
    cpu_seconds, memory_mb. Compiles the file and calls compute_reward on every state twice, each load and call
    confined and limited, and writes one JSON object to stdout (JSON, so that nothing this process writes can run
    code in the parent): {"status": "ok", "rounds": [[floats], [floats]]} or {"status": "error", "message": line}.
    If it dies instead (a C-level CPU bomb), its exit code says how: see reward_process_died.
    """
    job = pickle.load(sys.stdin.buffer)
    limits = dict(cpu_seconds=job["cpu_seconds"], memory_mb=job["memory_mb"])
    try:
        reward_fn = compile_reward_fn(job["source"], job["filename"], **limits)
        rounds = [
            [
                call_reward(reward_fn, state, info, where=f"on the state of {label}", **limits)
                for state, info, label in zip(job["states"], job["infos"], job["labels"])
            ]
            for _ in range(2)
        ]
        answer = {"status": "ok", "rounds": rounds}
    except RewardFileError as error:
        answer = {"status": "error", "message": str(error)}
    sys.stdout.write(json.dumps(answer))
    sys.stdout.flush()


# ----------------------------------------------------------------------------------------------------------
# A process environment without secrets

SECRET_NAME_PARTS = ("KEY", "TOKEN", "SECRET", "PASS", "CREDENTIAL", "AUTH")  # PASS: PASSWORD, PASSWD, PASSPHRASE


def is_secret_name(name: str, extra_names: Iterable[str] = ()) -> bool:
    upper = name.upper()
    return any(part in upper for part in SECRET_NAME_PARTS) or name in set(extra_names)


def environ_without_secrets(extra_names: Iterable[str] = ()) -> dict:
    """A copy of os.environ without API keys, tokens, passwords and credentials (by name), nor `extra_names`."""
    extra_names = set(extra_names)
    return {name: value for name, value in os.environ.items() if not is_secret_name(name, extra_names)}


@contextlib.contextmanager
def environment_without_secrets(extra_secret_names: Iterable[str] = (), **overrides: str):
    """os.environ without secrets (plus `overrides`) while the block runs, then exactly as before.

    Start reward processes inside it: a child started with the spawn (or fork) method inherits os.environ as it is
    at start. Not with forkserver, whose server keeps the environment it was started with. Not thread-safe: no
    other thread should read or write the environment meanwhile.
    """
    saved = dict(os.environ)
    try:
        for name in saved:
            if is_secret_name(name, extra_secret_names):
                del os.environ[name]
        os.environ.update(overrides)
        yield
    finally:
        for name in set(os.environ) - set(saved):
            del os.environ[name]
        for name, value in saved.items():
            if os.environ.get(name) != value:
                os.environ[name] = value


# ----------------------------------------------------------------------------------------------------------
# Paths, the regeneration command, and the `state` and `info` a reward gets


def reward_file_path(suite: str, task_name: str) -> Path:
    return REWARDS_DIR / suite / f"{task_name}.py"


def regenerate_command(suite: str, task_id) -> str:
    """The command that (re)generates the reward file of task `task_id` of `suite`."""
    return f"python gen_reward.py --suite {suite} --task-ids {task_id} --provider anthropic --llm <model name>"


def articulation_qpos(sim_env, name: str) -> np.ndarray:
    """Positions of an object's hinge/slide joints (drawers, doors, knobs); free joints are skipped."""
    qpos = []
    for joint in sim_env.get_object(name).joints:
        address = sim_env.sim.model.get_joint_qpos_addr(joint)
        if not isinstance(address, tuple):
            qpos.append(sim_env.sim.data.qpos[address])
    return np.array(qpos, dtype=np.float64)


def build_reward_state(env, obs: dict, step: int, success: bool) -> dict:
    """The simulator state a reward function sees (schema: rewards/README.md), from a LIBERO env after a step.
    No pixels. LIBERO is imported here, not at the top: the rest of this package must load without it."""
    from libero.libero.envs.predicates import eval_predicate_fn

    sim_env = env.env
    gripper = sim_env.robots[0].gripper
    objects = {}
    for name, object_state in sim_env.object_states_dict.items():
        geom = object_state.get_geom_state()
        kind = "object" if name in sim_env.objects_dict else "fixture" if name in sim_env.fixtures_dict else "site"
        quat = np.array(geom["quat"], dtype=np.float64)
        if kind != "site":
            quat = quat[[1, 2, 3, 0]]  # MuJoCo bodies are (w, x, y, z); sites and the eef are (x, y, z, w)
        entry = {"kind": kind, "pos": np.array(geom["pos"], dtype=np.float64), "quat": quat}
        if kind == "object":
            entry["grasped"] = bool(sim_env._check_grasp(gripper=gripper, object_geoms=sim_env.objects_dict[name]))
        if kind != "site":
            entry["joint_qpos"] = articulation_qpos(sim_env, name)
        objects[name] = entry
    goal = [
        {
            "predicate": predicate[0],
            "args": list(predicate[1:]),
            "satisfied": bool(eval_predicate_fn(predicate[0], *[sim_env.object_states_dict[a] for a in predicate[1:]])),
        }
        for predicate in sim_env.parsed_problem["goal_state"]
    ]
    gripper_qpos = np.array(obs["robot0_gripper_qpos"], dtype=np.float64)
    return {
        "step": int(step),
        "success": bool(success),
        "eef_pos": np.array(obs["robot0_eef_pos"], dtype=np.float64),
        "eef_quat": np.array(obs["robot0_eef_quat"], dtype=np.float64),
        "gripper_qpos": gripper_qpos,
        "gripper_opening": float(gripper_qpos[0] - gripper_qpos[1]),
        "objects": objects,
        "goal": goal,
    }


def build_reward_info(suite: str, task_name: str, instruction: str, max_steps: int, initial: dict) -> dict:
    """The `info` a reward file gets (schema: rewards/README.md); the one place it is built."""
    return {
        "suite": suite,
        "task_name": task_name,
        "instruction": instruction,
        "max_steps": int(max_steps),
        "initial": initial,
    }
