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
- A process of its own (`RewardProcess`, `reward_process_main`), confined by the kernel as well: reward code runs
  only in a small process that does nothing but compute, never in an env worker or the trainer. It starts from
  an environment without secrets (`environment_without_secrets`), then, before any reward code runs, confines
  itself for good (`confine_reward_process`): an absolute address-space cap, no core dumps, the unprivileged
  user `nobody` when started as root, and a seccomp filter (libseccomp, through pyseccomp) under which the kernel
  refuses every file open, socket, exec, new process, ptrace, cross-process memory read and signal to another
  process. Where the machine lacks a facility, one line says so and the Python guards carry on alone.
- Limits (`run_limited`, `confine_reward_process`): CPU time per call (or per load), and memory as one absolute
  cap on the process's address space, set once at start-up; everything the process does on the file's behalf
  (load-time code, freezing what it built, the call, the checks after it, formatting its error) runs under them.
  Any death of a reward process is the reward file's fault (`reward_process_died`).

This module imports only the standard library, numpy and RestrictedPython (nothing of ours, no torch, no LIBERO;
pyseccomp only inside a reward process), so a reward process starts in well under a second.
"""

import ast
import builtins
import contextlib
import errno
import functools
import hashlib
import itertools
import json
import math
import multiprocessing.connection
import numbers
import operator
import os
import pickle
import reprlib
import resource
import signal
import subprocess
import sys
import threading
import time
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
DEFAULT_MEMORY_MB = 1024  # --reward-memory-mb: address space a reward process may take above its start-up size
MIN_MEMORY_MB = 64  # the least --reward-memory-mb the scripts accept


def limit_problems(cpu_seconds: float, memory_mb: float) -> list:
    """The checks of --reward-cpu-seconds and --reward-memory-mb, as (failed, flag, fix) for every script's checks."""
    return [
        (cpu_seconds <= 0, "--reward-cpu-seconds", "use a positive number of seconds"),
        (memory_mb < MIN_MEMORY_MB, "--reward-memory-mb", f"use at least {MIN_MEMORY_MB}"),
    ]

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
    a reward that depends on its history nor a memory bomb spread over many calls, each within its limit.
    Walks with a stack of iterators: no copy of a big container, no recursion however deep the nesting (it runs
    under the limits of the load, which stop a [0.5] * 10**8 constant)."""
    pending = [iter([value for name, value in namespace.items() if not name.startswith("_")])]
    while pending:
        value = next(pending[-1], MISSING)
        if value is MISSING:
            pending.pop()
            continue
        if id(value) in frozen:
            continue
        if isinstance(value, np.ndarray):
            value.flags.writeable = False  # also stops numpy's out= arguments, which no guard sees
            if value.dtype.hasobject:  # also a structured dtype with an object field, seen through np.void items
                pending.append(iter(value.ravel().tolist()))  # (tolist: a record's fields as a tuple)
        elif isinstance(value, np.void) and value.dtype.hasobject:  # one record of such an array
            pending.append(iter(value.tolist()))
        elif isinstance(value, (list, tuple, set, frozenset)):
            pending.append(iter(value))
        elif isinstance(value, dict):
            pending.append(itertools.chain(value.keys(), value.values()))
        elif isinstance(value, types.FunctionType) and value.__globals__ is namespace:
            cells = [cell.cell_contents for cell in value.__closure__ or () if cell_is_set(cell)]
            pending.append(iter([*(value.__defaults__ or ()), *(value.__kwdefaults__ or {}).values(), *cells]))
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

    while True:  # names bound to a module (`L = np.linalg`, then `M = L`), so `L.lstsq` is checked as well
        found = {name: module for name, module in module_bindings(tree, module_of) if name not in modules}
        if not found:
            break
        modules.update(found)

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


def module_bindings(tree: ast.Module, module_of: Callable):
    """(name, module) for every plain assignment of a module to a name (`L = np.linalg`, `L: object = np`)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
            module = module_of(node.value)
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if module is not None and isinstance(target, ast.Name):
                    yield target.id, module


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
    loaded_arrays: list = field(default_factory=list, repr=False)  # (array, array_digest) built while loading

    def __call__(self, state: dict, info: dict):
        return self.fn(state, info)


def compile_reward_fn(
    source: str,
    filename: str = "<reward>",
    *,
    cpu_seconds: Optional[float] = None,
    memory_mb: Optional[float] = None,
    precheck: bool = True,
) -> RewardFn:
    """Check `source`, then run its top level (imports, constants, defaults, decorators) under the guards and,
    when given, the CPU limit of one call, which also covers freezing what it built and formatting its error.
    Run this in the process that will call the reward (a reward process), never in the trainer. `memory_mb`
    names the memory cap in messages; the cap itself is the process's (confine_reward_process).
    `precheck=False` skips the readable AST pre-check (for tests that show the guards hold alone)."""
    code = check_reward_source(source, filename) if precheck else restricted_code(source, filename)
    work = (code, source, filename, cpu_seconds, memory_mb)
    return limited(run_top_level, work, cpu_seconds, memory_mb, filename, "while loading the file")


def run_top_level(code, source: str, filename: str, cpu_seconds, memory_mb) -> RewardFn:
    frozen = {}
    namespace = restricted_globals(frozen)
    try:
        exec(code, namespace)
        freeze_load_time_values(namespace, frozen)
    except (Exception, ContractViolation, CPULimitExceeded) as error:
        reason = describe_failure(error, filename, source, cpu_seconds, memory_mb)
        raise RewardFileError(f"{filename} {reason} while loading the file") from None
    fn = namespace.get("compute_reward")
    if not isinstance(fn, types.FunctionType):
        raise RewardFileError(f"{filename}: must define `def compute_reward(state, info) -> float` at top level")
    loaded_names = {name: value for name, value in namespace.items() if not name.startswith("_")}
    loaded_arrays = [(value, array_digest(value)) for value in frozen.values() if isinstance(value, np.ndarray)]
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
    where: Optional[str] = None,
) -> float:
    """compute_reward(state, info) as a finite float, or one RewardFileError naming the file, the step, the env
    and the reason (an exception, a contract violation, a limit, a non-finite number or a non-number). The CPU
    limit of one call (None: none) covers the call and all the work done for it here; only in a dedicated
    process (a reward process): the limit acts on the whole process. `memory_mb` names the process's memory cap
    in messages (see compile_reward_fn). The reward gets its own copies of state and info, so it can change
    neither the caller's data nor what later calls see. `where` replaces "at step N (env i)" in messages (e.g.
    "on the state of ...")."""
    if where is None:
        where = f"at step {state.get('step', '?')}" + (f" (env {env_index})" if env_index is not None else "")
    work = (reward_fn, state, info, where, cpu_seconds, memory_mb)
    return limited(run_call, work, cpu_seconds, memory_mb, reward_fn.path, where)


def run_call(reward_fn: RewardFn, state: dict, info: dict, where: str, cpu_seconds, memory_mb) -> float:
    own_state, own_info = fresh_copy(state), fresh_copy(info)
    try:
        value = reward_fn.fn(own_state, own_info)
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
    try:
        reward = float(value)
    except OverflowError:  # return 10**400
        raise RewardFileError(
            f"{reward_fn.path} returned a number too large for a float {where}; compute_reward must return a finite "
            "float"
        ) from None
    if not math.isfinite(reward):
        raise RewardFileError(
            f"{reward_fn.path} returned {reward} {where}; compute_reward must return a finite float (guard "
            "divisions, logs and square roots, e.g. with max(distance, 1e-6))"
        )
    return reward


def limited(function: Callable, args: tuple, cpu_seconds, memory_mb, filename: str, where: str):
    """function(*args) under the CPU limit; a limit that fires in our own code after the reward code returned
    (freezing what it built, checking what it kept, formatting its error) is the file's all the same."""
    try:
        return run_limited(function, args, cpu_seconds)
    except CPULimitExceeded:
        raise RewardFileError(f"{filename} {cpu_limit_reason(cpu_seconds)} {where}") from None
    except MemoryError:
        raise RewardFileError(f"{filename} {memory_limit_reason(memory_mb)} {where}") from None
    except RecursionError:  # e.g. checking a value nested deeper than Python's recursion limit
        raise RewardFileError(f"{filename} built a value nested too deeply to check {where}") from None


def carried_state(reward_fn: RewardFn) -> str:
    """What a call changed that the next call would see, in words, or "". The guards refuse changes to what the
    file built at load time; two ways around them are checked here after each call: `global x; x = ...`, and
    numpy functions writing through out= (some, e.g. np.cumsum in numpy 1.26, ignore an array's read-only flag)."""
    now = {name: value for name, value in reward_fn.namespace.items() if not name.startswith("_")}
    names = set(now) | set(reward_fn.loaded_names)
    rebound = sorted(name for name in names if now.get(name, MISSING) is not reward_fn.loaded_names.get(name, MISSING))
    if rebound:
        return f"changed the module-level name(s) {', '.join(rebound)} (`global`)"
    if any(array_digest(array) != loaded for array, loaded in reward_fn.loaded_arrays):
        return "changed an array built when the file was loaded (e.g. through a numpy out= argument)"
    return ""


def array_digest(array: np.ndarray) -> bytes:
    """A hash of an array's bytes, without a copy where its memory is one block (an object array's bytes are its
    elements' addresses: replacing an element changes them too)."""
    try:
        data = memoryview(array) if array.flags.c_contiguous and not array.dtype.hasobject else array.tobytes()
        return hashlib.blake2b(data, digest_size=16).digest()
    except (TypeError, ValueError, BufferError, NotImplementedError):  # dtypes without a buffer format
        return hashlib.blake2b(array.tobytes(), digest_size=16).digest()


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
    """`raised KeyError: 'x' (line 12: bowl = ...)`, or the contract or limit it broke, at the file's own line.
    Bounded in size and time whatever the error holds: frames are matched by name (no source file is read), and
    the error's text is cut before it is built (error_text)."""
    lineno = None
    for frame, line in traceback.walk_tb(error.__traceback__):
        if frame.f_code.co_filename == filename:
            lineno = line
    at = ""
    if lineno is not None:
        lines = source.splitlines()
        at = f" (line {lineno}: {lines[lineno - 1].strip()[:200]})" if 0 < lineno <= len(lines) else f" (line {lineno})"
    if isinstance(error, ContractViolation):
        return f"broke the reward-file contract: it {str(error)[:ERROR_TEXT_CHARS]}{at}"
    if isinstance(error, CPULimitExceeded):
        return f"{cpu_limit_reason(cpu_seconds)}{at}"
    if isinstance(error, MemoryError) and memory_mb is not None:
        return f"{memory_limit_reason(memory_mb)}{at}"
    text = error_text(error)
    return f"raised {type(error).__name__}" + (f": {text}" if text else "") + at


ERROR_TEXT_CHARS = 300  # of an exception's text in a message


class ShortRepr(reprlib.Repr):
    """reprlib's repr, which stops early in long and deep containers, also for ints too long to print."""

    def repr_int(self, x, level):
        if x.bit_length() > 1000:  # str() refuses past 4300 digits, and is slow long before
            return f"<an int of about {int(x.bit_length() * math.log10(2)) + 1} digits>"
        return super().repr_int(x, level)


SHORT_REPR = ShortRepr()
SHORT_REPR.maxstring = SHORT_REPR.maxother = ERROR_TEXT_CHARS


def error_text(error: BaseException) -> str:
    """str(error) on one line, at most ERROR_TEXT_CHARS long, never building a longer text first: a reward file
    can raise ValueError([s] * 3000) with a 1 MB `s` (a 3 GB str()), or ValueError(10**5000), which str()
    refuses (the digit limit)."""
    small = all(
        arg is None
        or isinstance(arg, float)
        or (isinstance(arg, str) and len(arg) <= 10_000)
        or (isinstance(arg, int) and arg.bit_length() <= 10_000)
        for arg in error.args
    )
    text = None
    if small:
        try:
            text = str(error)
        except Exception:  # a broken __str__ of some library's exception
            pass
    if text is None:
        text = SHORT_REPR.repr(error.args[0] if len(error.args) == 1 else error.args)
    return " ".join(text[: ERROR_TEXT_CHARS * 2].split())[:ERROR_TEXT_CHARS]


def describe_state_keys(state: dict) -> str:
    objects = ", ".join(sorted(state.get("objects", {})))
    return f"state keys {sorted(state)}; objects [{objects}]"


def cpu_limit_reason(cpu_seconds) -> str:
    return f"exceeded its CPU-time limit of {cpu_seconds:g} s per call (--reward-cpu-seconds)"


def memory_limit_reason(memory_mb) -> str:
    if memory_mb is None:
        return "ran out of memory"
    return f"exceeded its memory limit of {memory_mb:g} MB (--reward-memory-mb)"


# ----------------------------------------------------------------------------------------------------------
# Limits


def address_space_bytes() -> Optional[int]:
    """This process's current virtual address-space size (Linux), or None where /proc is missing."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return None


def run_limited(function: Callable, args: tuple, cpu_seconds: Optional[float]):
    """function(*args) under a CPU-time limit, restored afterwards (None: no limit). Memory has no limit here: a
    reward process caps its whole address space once, at start-up (confine_reward_process), so that the cap holds
    for everything it does, between calls too.

    Only in a dedicated process's main thread: the limits and signal handlers are the whole process's.
    RLIMIT_CPU's soft limit is set to the CPU time used so far plus `cpu_seconds` (rounded up to a whole second,
    the kernel's unit), and SIGXCPU's handler raises CPULimitExceeded between bytecodes, which stops a pure-Python
    loop with a clear message while the process lives on (also 10**10**10: CPython checks for signals inside
    big-int arithmetic). A loop inside one C call that never checks (sum(range(10**15))) gives no handler a
    chance to run: for that, a CPU-time timer (ITIMER_PROF, with SIGPROF's default action) kills the process
    CPU_KILL_GRACE_SECONDS of CPU time later. Its exit code is then -SIGPROF, which reward_process_died turns into
    the message.
    """
    limits = start_limits(cpu_seconds)
    try:
        result = function(*args)
        limits["armed"] = False
    finally:
        # The first statement makes no call, so no signal handler runs before it: a SIGXCPU that lands from here
        # on cannot raise inside the restore (with a context manager, it could, in __exit__ before our finally).
        limits["armed"] = False
        stop_limits(limits)
    return result


def start_limits(cpu_seconds: Optional[float]) -> dict:
    limits = {"armed": True, "cpu_seconds": cpu_seconds}
    if cpu_seconds is None:
        return limits
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("reward limits need the main thread of a dedicated process (they use signals)")

    def on_cpu_limit(signum, frame):
        if limits["armed"]:
            raise CPULimitExceeded()

    limits["cpu"] = resource.getrlimit(resource.RLIMIT_CPU)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime + cpu_seconds)
    limits["xcpu_handler"] = signal.signal(signal.SIGXCPU, on_cpu_limit)
    resource.setrlimit(resource.RLIMIT_CPU, (lower_limit(soft, limits["cpu"]), limits["cpu"][1]))
    limits["prof_handler"] = signal.signal(signal.SIGPROF, signal.SIG_DFL)
    limits["prof_timer"] = signal.setitimer(signal.ITIMER_PROF, cpu_seconds + CPU_KILL_GRACE_SECONDS)
    return limits


def stop_limits(limits: dict) -> None:
    limits["armed"] = False
    if limits["cpu_seconds"] is not None:
        signal.setitimer(signal.ITIMER_PROF, *limits["prof_timer"])
        signal.signal(signal.SIGPROF, limits["prof_handler"])
        resource.setrlimit(resource.RLIMIT_CPU, limits["cpu"])
        signal.signal(signal.SIGXCPU, limits["xcpu_handler"])


def lower_limit(wanted: int, old: tuple) -> int:
    """`wanted`, but never above a soft or hard limit the user already set (e.g. with ulimit)."""
    for bound in old:
        if bound != resource.RLIM_INFINITY:
            wanted = min(wanted, bound)
    return wanted


CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL, signal.SIGFPE}


def reward_process_died(
    path: str,
    exitcode: Optional[int],
    *,
    where: str = "",
    cpu_seconds: Optional[float] = DEFAULT_CPU_SECONDS,
    memory_mb: Optional[float] = DEFAULT_MEMORY_MB,
) -> RewardFileError:
    """The one-line error for a reward process that died (or missed the caller's deadline, exitcode None). A
    reward process runs nothing but the file's code and the work done for it, so whatever the way it died, the
    reward file, not the simulator, is at fault."""
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
    elif -exitcode in CRASH_SIGNALS:
        reason = (
            f"crashed its reward process ({signal.Signals(-exitcode).name}), e.g. by a C-stack overflow from a value "
            "nested very deeply (a long chain of map, slice, enumerate or generator objects, an array that holds "
            "itself)"
        )
    elif exitcode == -signal.SIGKILL:
        reason = "was running when its process was killed (SIGKILL: the kernel's out-of-memory killer, or by hand)"
    elif exitcode < 0:
        reason = f"was running when its process was killed by {signal.Signals(-exitcode).name}"
    else:
        reason = f"was running when its process died (exit code {exitcode})"
    limits = ""
    if exitcode != -signal.SIGPROF and cpu_seconds is not None and memory_mb is not None:
        limits = f"; limits: {cpu_seconds:g} CPU seconds per call, {memory_mb:g} MB"
    return RewardFileError(f"{path} {reason}{(' ' + where) if where else ''}{limits}")


# ----------------------------------------------------------------------------------------------------------
# The reward process: confined by the kernel, for good, before any reward code runs

NOBODY_UID = 65534  # the user a reward process started as root switches to, where no user "nobody" is listed
# The kernel answers these system calls with EPERM in a reward process: everything beyond computing on what it
# already holds and talking to its parent over the two pipes it was started with. Python and numpy need none
# of them once started (warm_up loads what they would load lazily).
DENIED_SYSCALLS = """
    open openat openat2 creat open_by_handle_at name_to_handle_at open_tree fsopen fsmount fspick move_mount mount
    mount_setattr umount2 pivot_root chroot unlink unlinkat rename renameat renameat2 link linkat symlink symlinkat
    mkdir mkdirat rmdir mknod mknodat truncate chmod fchmodat chown lchown fchownat utime utimes utimensat futimesat
    setxattr lsetxattr removexattr lremovexattr readlink readlinkat inotify_init inotify_init1 inotify_add_watch
    fanotify_init fanotify_mark
    socket socketpair connect bind listen accept accept4 sendto sendmsg sendmmsg recvfrom recvmsg recvmmsg
    execve execveat fork vfork clone ptrace process_vm_readv process_vm_writev pidfd_open pidfd_getfd
    pidfd_send_signal kcmp process_madvise process_mrelease setpriority sched_setscheduler sched_setparam
    sched_setattr ioprio_set migrate_pages move_pages unshare setns
    shmget shmat shmctl msgget msgsnd msgrcv msgctl semget semop semtimedop semctl mq_open mq_unlink
    mq_timedsend mq_timedreceive mq_notify mq_getsetattr
    ioctl keyctl add_key request_key bpf perf_event_open userfaultfd io_uring_setup io_uring_enter
    io_uring_register
    setuid setgid setreuid setregid setresuid setresgid setfsuid setfsgid setgroups capset
    init_module finit_module delete_module kexec_load kexec_file_load reboot swapon swapoff acct quotactl
    quotactl_fd syslog settimeofday clock_settime clock_adjtime adjtimex sethostname setdomainname iopl ioperm
    uselib
""".split()  # ioctl: e.g. TIOCSTI, which types into the terminal that stderr may be
# Signals: to itself only (argument 0 is its own pid; glibc's raise() and abort() send that way).
SELF_ONLY_SYSCALLS = "kill tkill tgkill rt_sigqueueinfo rt_tgsigqueueinfo".split()
# Code that a reward process runs once before it confines itself, so that everything Python and numpy load on
# first use (modules, LAPACK, the limits' signal handlers, error formatting) is loaded while files can be opened.
WARM_UP_SOURCE = """
import math
import numpy as np
import numpy.linalg as la
from numpy.linalg import norm

TABLE = np.linspace(0.0, 1.0, 5)


def compute_reward(state, info):
    pos = np.asarray(state["eef_pos"], dtype=np.float64)
    values, vectors = la.eigh(np.eye(3))
    m = np.eye(2) + 0.5
    terms = [norm(pos), float(la.svd(m)[1].sum()), la.det(m), float(la.inv(m).sum()), float(la.pinv(m).sum()),
             float(la.solve(m, np.ones(2)).sum()), float(la.matrix_rank(m)), float(la.eig(m)[0].real.sum()),
             float(np.interp(0.5, TABLE, TABLE)), float(np.median(pos)), float(np.std(pos)), float(np.var(pos)),
             float(np.clip(pos, 0.0, 1.0).mean()), float(np.cross(pos, pos).sum()), float(np.einsum("i,i", pos, pos)),
             float(np.sort(pos)[0]), float(np.argmax(pos)), float(np.where(pos > 0, 1.0, 0.0).sum()), math.exp(-1.0),
             float(np.round(pos, 2).sum()), float(np.cumsum(pos)[-1]), float(np.prod(pos)), float(vectors.sum()),
             float(np.maximum.reduce([1.0, 2.0])), float(np.hypot(3.0, 4.0)), float(np.arctan2(1.0, 1.0))]
    text = f"{pos} {values!r} {np.float32(1.5)} {pos[0]:.3f} {state['step']:03d} {TABLE.dtype}"
    return float(sum(terms)) + len(text) + len(str(pos.tolist()))
"""
WARM_UP_FAILURES = [
    "state['missing']",
    "np.ones(2) + np.ones(3)",
    "1 / 0",
    "[][1]",
    "np.linalg.inv(np.zeros((2, 2)))",
    "np.ones(2)['x']",
    "int('x')",
    "np.zeros(2)[5]",
    "state.no_such_method",
]


def import_pyseccomp():
    """The pyseccomp module, or why it cannot serve (one phrase for the gaps line)."""
    try:
        import pyseccomp
    except ImportError:
        return "seccomp (the Python package pyseccomp is not installed: pip install -r requirements.txt)"
    except (RuntimeError, OSError):  # "Unable to find libseccomp"
        return "seccomp (libseccomp is not installed: apt-get install libseccomp2)"
    return pyseccomp


def warm_up() -> None:
    state = {"step": 1, "eef_pos": np.array([0.1, 0.2, 1.1]), "objects": {}}
    reward_fn = compile_reward_fn(WARM_UP_SOURCE, "<warm-up>", cpu_seconds=60.0, memory_mb=DEFAULT_MEMORY_MB)
    call_reward(reward_fn, state, {}, cpu_seconds=60.0, memory_mb=DEFAULT_MEMORY_MB)
    for body in WARM_UP_FAILURES:
        source = f"import numpy as np\ndef compute_reward(state, info):\n    return {body}\n"
        with contextlib.suppress(RewardFileError):
            call_reward(compile_reward_fn(source, "<warm-up>"), state, {}, cpu_seconds=None, memory_mb=None)


def confine_reward_process(memory_mb: Optional[float]) -> list:
    """Confine this process for good, before it runs any reward code, and return what this machine lacks for it
    (phrases for one warning line; [] when everything holds). In order:
    - warm up (see WARM_UP_SOURCE), while files can still be opened;
    - no core dumps (a crash must not write GBs to disk);
    - an absolute cap on the address space (RLIMIT_AS, soft and hard): its size now plus `memory_mb`, for the rest
      of its life, so that nothing it does (load-time code, calls, what the checks after a call or the formatting
      of an error allocate, anything kept between calls) can take more; None: no cap;
    - started as root: switch to the unprivileged user nobody (no capabilities; the kernel then refuses it other
      users' processes, their /proc/<pid>/environ and memory, and raising the cap);
    - a seccomp filter (libseccomp, through pyseccomp; it also sets PR_SET_NO_NEW_PRIVS) for this and every
      thread: the kernel refuses DENIED_SYSCALLS (files, sockets, exec, new processes, ptrace, other processes'
      memory, IPC, ioctl) and signals to other processes with EPERM.
    """
    seccomp = import_pyseccomp()  # before the cap: loading libseccomp maps memory
    warm_up()
    gaps = []
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    current = address_space_bytes()
    if memory_mb is not None and current is not None:
        old = resource.getrlimit(resource.RLIMIT_AS)
        cap = lower_limit(current + int(memory_mb * 2**20), old)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    elif memory_mb is not None:
        gaps.append("a memory cap (no /proc/self/statm to measure the address space)")
    if os.geteuid() == 0:
        gaps += drop_root()
    return gaps + load_seccomp_filter(seccomp)


def drop_root() -> list:
    try:
        import pwd

        entry = pwd.getpwnam("nobody")
        uid, gid = entry.pw_uid, entry.pw_gid
    except KeyError:
        uid = gid = NOBODY_UID
    try:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    except OSError as error:
        return [f"an unprivileged user (switching from root to nobody failed: {error.strerror})"]
    return []


def load_seccomp_filter(seccomp) -> list:
    if isinstance(seccomp, str):
        return [seccomp]
    deny = seccomp.ERRNO(errno.EPERM)
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    with contextlib.suppress(OSError):
        rules.set_attr(seccomp.Attr.CTL_TSYNC, 1)  # every thread (numpy's BLAS may have started some)
    pid = os.getpid()
    for name in DENIED_SYSCALLS:
        add_seccomp_rule(rules, deny, name)
    add_seccomp_rule(rules, seccomp.ERRNO(errno.ENOSYS), "clone3")  # as a kernel without it: glibc falls back to clone
    for name in SELF_ONLY_SYSCALLS:
        add_seccomp_rule(rules, deny, name, seccomp.Arg(0, seccomp.NE, pid))
    add_seccomp_rule(rules, deny, "prlimit64", seccomp.Arg(0, seccomp.NE, 0))  # its own limits only (pid 0)
    try:
        rules.load()
    except OSError as error:
        return [f"seccomp (the kernel refused the filter: {error.strerror})"]
    return []


def add_seccomp_rule(rules, action: int, name: str, *conditions) -> None:
    try:
        rules.add_rule(action, name, *conditions)
    except OSError:  # a system call that this libseccomp, or this architecture, does not know
        pass


def gaps_line(gaps: list) -> str:
    return (
        f"[rewards] warning: reward processes run without {'; '.join(gaps)}; reward code keeps the Python guards "
        "and its CPU and memory limits"
    )


REPORTED_GAPS = set()  # lines already printed by this (parent) process: one per kind of gap, not per process


def report_gaps(gaps: list) -> None:
    line = gaps_line(gaps) if gaps else ""
    if line and line not in REPORTED_GAPS:
        REPORTED_GAPS.add(line)
        print(line, file=sys.stderr)


def reward_process_main() -> None:
    """Main of a reward process: `python -c "import rewards; rewards.reward_process_main()" CPU_SECONDS MEMORY_MB`
    (each a number or "none"), started by RewardProcess with an environment without secrets.

    Confines itself (confine_reward_process), says so ({"ready": true, "gaps": [...]}), then serves requests from
    stdin until it closes: pickles from the trusted parent, each answered on stdout by one JSON message, never a
    pickle, so that nothing this process writes can run code in its parent:
    ("load", path, source, info, precheck) -> {"ok": true}; ("call", state, env_index) -> {"reward": float};
    either -> {"error": "<one line naming the file>"}.
    """
    ignore_stop_signals()  # a Ctrl-C or SIGTERM to the process group is for the parent, which closes us
    cpu_seconds, memory_mb = (None if arg == "none" else float(arg) for arg in sys.argv[1:3])
    replies = multiprocessing.connection.Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # whatever C code prints goes to stderr, never into the replies
    requests = multiprocessing.connection.Connection(0, writable=False)
    gaps = confine_reward_process(memory_mb)
    replies.send_bytes(json.dumps({"ready": True, "gaps": gaps}).encode())
    loaded = {}
    while True:
        try:
            request = pickle.loads(requests.recv_bytes())
        except EOFError:
            os._exit(0)  # closed by the parent; no teardown, which could trip over what a file built
        answer = serve_request(loaded, request, cpu_seconds, memory_mb)
        replies.send_bytes(json.dumps(answer).encode())


def serve_request(loaded: dict, request: tuple, cpu_seconds, memory_mb) -> dict:
    """One request of reward_process_main. `loaded`: the loaded file's path, source, function and `info`, kept while
    the same file is loaded again."""
    path = loaded.get("path", "the reward file")
    try:
        if request[0] == "load":
            _, path, source, info, precheck = request
            if loaded.get("source") != (path, source):
                loaded.clear()  # the previous file's objects go first
                limits = dict(cpu_seconds=cpu_seconds, memory_mb=memory_mb, precheck=precheck)
                loaded["reward_fn"] = compile_reward_fn(source, path, **limits)
                loaded["path"], loaded["source"] = path, (path, source)
            loaded["info"] = info
            return {"ok": True}
        _, state, env_index = request
        if "reward_fn" not in loaded:
            return {"error": f"{path}: no reward file is loaded (its load failed)"}
        limits = dict(cpu_seconds=cpu_seconds, memory_mb=memory_mb)
        return {"reward": call_reward(loaded["reward_fn"], state, loaded["info"], env_index=env_index, **limits)}
    except RewardFileError as error:
        return {"error": str(error)}
    except MemoryError:  # in our own code (the request, the copies), with the cap nearly used up by the file
        return {"error": f"{path} {memory_limit_reason(memory_mb)}"}


def is_text(value) -> bool:
    return type(value) is str


REPLY_MAX_BYTES = 2**16  # a reply is a float or a line of text: anything longer is a process gone wrong
ERROR_LINE_CHARS = 2000  # an error line from a reward process is cut to this length


def reward_process_environment(extra_secret_names: Iterable[str] = ()) -> dict:
    """The environment a reward process starts with: no secrets, this repository importable, BLAS on one thread
    (no thread pool to start; the seccomp filter refuses new threads anyway)."""
    environment = environ_without_secrets(extra_secret_names)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REWARDS_DIR.parent), environment.get("PYTHONPATH")]))
    environment.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    return environment


class RewardProcess:
    """The parent's end of one reward process (reward_process_main): load a file into it, then call it per step.

    Requests go out as pickles; answers come back as JSON of at most REPLY_MAX_BYTES, so nothing the process writes
    can run code here. Every way it can fail (an error in the file, a limit, a crash, a missed deadline, garbage
    instead of an answer) is a RewardFileError of one line naming the file. `send` and `receive` are apart so that
    a pool keeps several processes busy at once; `load` and `call` do both.
    """

    def __init__(self, cpu_seconds=DEFAULT_CPU_SECONDS, memory_mb=DEFAULT_MEMORY_MB, extra_secret_names=()):
        self.cpu_seconds, self.memory_mb = cpu_seconds, memory_mb
        self.path, self.where, self.ready = "the reward file", "", False
        limit = lambda value: "none" if value is None else repr(float(value))  # noqa: E731
        command = [sys.executable, "-c", "import rewards; rewards.reward_process_main()"]
        request_read, request_write = os.pipe()
        reply_read, reply_write = os.pipe()
        try:
            with stop_signals_blocked():
                self.process = subprocess.Popen(
                    command + [limit(cpu_seconds), limit(memory_mb)],
                    stdin=request_read,
                    stdout=reply_write,
                    env=reward_process_environment(extra_secret_names),
                )
        finally:
            os.close(request_read)
            os.close(reply_write)
        self.requests = multiprocessing.connection.Connection(request_write, readable=False)
        self.replies = multiprocessing.connection.Connection(reply_read, writable=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def load(self, path: str, source: str, info: dict, timeout: float = 60.0, precheck: bool = True) -> None:
        self.send(("load", path, source, info, precheck), where="while loading the file")
        self.receive(timeout)

    def call(self, state: dict, env_index: Optional[int] = None, timeout: float = 60.0) -> float:
        where = f"at step {state.get('step', '?')}" + (f" (env {env_index})" if env_index is not None else "")
        self.send(("call", state, env_index), where=where)
        return self.receive(timeout)["reward"]

    def send(self, request: tuple, where: str = "") -> None:
        """Send one request (see reward_process_main); `where` ("at step 7 (env 2)") is for messages."""
        if request[0] == "load":
            self.path = request[1]
        self.where = where
        try:
            self.requests.send_bytes(pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:  # BrokenPipeError: it died, which receive reports
            pass

    def receive(self, timeout: float) -> dict:
        """The answer to the last request ({"ok": True} or {"reward": float}), or a RewardFileError."""
        deadline = time.monotonic() + timeout
        try:
            if not self.ready:  # its first message says it is confined, and what the machine lacked for it
                hello = self.read_answer(deadline)
                gaps = hello.get("gaps")
                if hello.get("ready") is not True or not isinstance(gaps, list) or not all(map(is_text, gaps)):
                    raise self.failure(garbage=True)
                self.ready = True
                report_gaps([gap[:300] for gap in gaps])
            answer = self.read_answer(deadline)
        except BaseException:
            self.kill()  # whatever stopped us mid-answer, its next answer would belong to this request
            raise
        if "error" in answer and isinstance(answer["error"], str):
            raise RewardFileError(" ".join(answer["error"][:ERROR_LINE_CHARS].split()))
        reward = answer.get("reward")
        if answer == {"ok": True} or (type(reward) is float and math.isfinite(reward) and len(answer) == 1):
            return answer
        self.kill()
        raise self.failure(garbage=True)

    def read_answer(self, deadline: float) -> dict:
        if not self.replies.poll(max(0.0, deadline - time.monotonic())):
            raise self.failure(exitcode=None)
        try:
            answer = json.loads(self.replies.recv_bytes(REPLY_MAX_BYTES))
        except (EOFError, OSError):  # it died (or wrote more than an answer may hold)
            raise self.failure(exitcode=self.wait_for_exit())
        except ValueError:
            raise self.failure(garbage=True)
        if not isinstance(answer, dict):
            raise self.failure(garbage=True)
        return answer

    def wait_for_exit(self) -> Optional[int]:
        try:
            return self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None

    def failure(self, exitcode: Optional[int] = None, garbage: bool = False) -> RewardFileError:
        self.kill()
        if garbage:
            return RewardFileError(f"{self.path}: its reward process answered garbage {self.where}".rstrip())
        limits = dict(cpu_seconds=self.cpu_seconds, memory_mb=self.memory_mb)
        return reward_process_died(self.path, exitcode, where=self.where, **limits)

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        self.process.wait()

    def close(self) -> None:
        """End it: it exits when its stdin closes; killed if it does not within a second (a C-level loop)."""
        self.requests.close()
        try:
            self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            self.kill()
        self.replies.close()


def validation_main() -> None:
    """Main of gen_reward.py's validation process: `python -c "import rewards; rewards.validation_main()"`, started
    with an environment from environ_without_secrets.

    Reads one pickled job from stdin (written by the trusted parent): source, filename, states, infos, labels,
    cpu_seconds, memory_mb. Confines itself as a reward process does (confine_reward_process; a missing facility
    is one line on stderr), compiles the file and calls compute_reward on every state twice, each load and call
    confined and limited, and writes one JSON object to stdout (JSON, so that nothing this process writes can run
    code in the parent): {"status": "ok", "rounds": [[floats], [floats]]} or {"status": "error", "message": line}.
    If it dies instead (a C-level CPU bomb, a crash), its exit code says how: see reward_process_died.
    """
    job = pickle.load(sys.stdin.buffer)
    limits = dict(cpu_seconds=job["cpu_seconds"], memory_mb=job["memory_mb"])
    gaps = confine_reward_process(job["memory_mb"])
    if gaps:
        print(gaps_line(gaps), file=sys.stderr)
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
    except MemoryError:
        answer = {"status": "error", "message": f"{job['filename']} {memory_limit_reason(job['memory_mb'])}"}
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


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_signals_blocked():
    """Start a child process with subprocess inside: it inherits the block (this thread's signal mask survives
    fork and exec), so that a Ctrl-C or SIGTERM to the whole process group, as a terminal or a scheduler sends
    it, waits until the child calls ignore_stop_signals, instead of killing it or making it print a traceback of
    its imports. Nothing is lost here: the other threads of this process still take these signals, and this one
    takes them when the block ends. (multiprocessing's spawn clears the mask in its children.)"""
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)


@contextlib.contextmanager
def children_ignore_stop_signals():
    """Start multiprocessing children inside: they begin with Ctrl-C and SIGTERM ignored (an ignored signal stays
    ignored across exec, so through their imports), where a signal to the process group would otherwise make each
    print a traceback of its imports. This process loses nothing: the signals are blocked meanwhile, and Linux
    keeps a blocked signal pending even while it is ignored, so it arrives once the handlers are back."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    with stop_signals_blocked():
        previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in STOP_SIGNALS}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def ignore_stop_signals() -> None:
    """Ignore Ctrl-C and SIGTERM in a child whose parent stops and closes it, and lift a block inherited from
    stop_signals_blocked (what arrived meanwhile is dropped)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


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


def encode_state(value):
    """A reward `state` (or `info`) as JSON-ready values, for recordings: an array becomes {"array": nested lists,
    "dtype": its dtype}; JSON keeps every float exactly, so decode_state gives back the very values."""
    if isinstance(value, np.ndarray):
        return {"array": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, dict):
        return {key: encode_state(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_state(item) for item in value]
    return value.item() if isinstance(value, np.generic) else value


def decode_state(value):
    """The inverse of encode_state."""
    if isinstance(value, dict):
        if value.keys() == {"array", "dtype"}:
            return np.array(value["array"], dtype=value["dtype"])
        return {key: decode_state(item) for key, item in value.items()}
    return [decode_state(item) for item in value] if isinstance(value, list) else value


def build_reward_info(suite: str, task_name: str, instruction: str, max_steps: int, initial: dict) -> dict:
    """The `info` a reward file gets (schema: rewards/README.md); the one place it is built."""
    return {
        "suite": suite,
        "task_name": task_name,
        "instruction": instruction,
        "max_steps": int(max_steps),
        "initial": initial,
    }
