"""Real-time primitives numba lacks: raw addresses as arrays, atomic ring
indices, a monotonic clock. Compiled into the render kernel; any thread.

- ``address_as_pointer``: an int64 address -> ``void*`` for ``numba.carray``
  (how the kernel reaches samples and its own state through the table).
- ``load_acquire`` / ``store_release``: the SPSC rings publish a record by
  storing the index after the record with release ordering; the reader loads
  it with acquire ordering. x86 would not need it; ARM boards (Pi 4) do.
- ``monotonic_ns``: clock_gettime(CLOCK_MONOTONIC) from libc, no GIL.
- ``thread_cpu_ns``, ``thread_usage``: the thread's own CPU time, page faults
  and context switches, to tell why a callback was late.
"""

from __future__ import annotations

import ctypes

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from stemdeck.engine import kernel_cache  # noqa: F401  (before any kernel compiles: where they are cached)


@intrinsic
def address_as_pointer(typingctx, address):
    sig = types.voidptr(types.int64)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return sig, codegen


def _element_pointer(context, builder, arrty, arr, index):
    ary = context.make_array(arrty)(context, builder, arr)
    return cgutils.get_item_pointer(context, builder, arrty, ary, [index])


@intrinsic
def load_acquire(typingctx, arr, index):
    sig = types.int64(arr, index)

    def codegen(context, builder, signature, args):
        ptr = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.load_atomic(ptr, "acquire", 8)

    return sig, codegen


@intrinsic
def store_release(typingctx, arr, index, value):
    sig = types.void(arr, index, value)

    def codegen(context, builder, signature, args):
        ptr = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        val = context.cast(builder, args[2], signature.args[2], types.int64)
        builder.store_atomic(val, ptr, "release", 8)
        return context.get_dummy_value()

    return sig, codegen


_LONG = ir.IntType(8 * ctypes.sizeof(ctypes.c_long))  # timespec fields are C longs
_CLOCK_MONOTONIC = 1  # Linux
_CLOCK_THREAD_CPUTIME_ID = 3


def _clock_codegen(clock_id: int):
    """Calls libc's clock_gettime by symbol name (resolved when the JIT links),
    not through a ctypes pointer, so functions using it stay cacheable."""
    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(32), _LONG.as_pointer()])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "clock_gettime")
        ts = cgutils.alloca_once(builder, _LONG, size=2)
        builder.call(fn, [ir.Constant(ir.IntType(32), clock_id), ts])
        sec = builder.sext(builder.load(ts), ir.IntType(64))
        nsec = builder.sext(builder.load(builder.gep(ts, [ir.Constant(ir.IntType(32), 1)])), ir.IntType(64))
        return builder.add(builder.mul(sec, ir.Constant(ir.IntType(64), 1_000_000_000)), nsec)
    return codegen


@intrinsic
def _clock_monotonic_ns(typingctx):
    return types.int64(), _clock_codegen(_CLOCK_MONOTONIC)


@intrinsic
def _clock_thread_cpu_ns(typingctx):
    return types.int64(), _clock_codegen(_CLOCK_THREAD_CPUTIME_ID)


@njit(nogil=True, cache=True)
def monotonic_ns():
    """Nanoseconds on the monotonic clock (the same clock as time.monotonic_ns)."""
    return _clock_monotonic_ns()


@njit(nogil=True, cache=True)
def thread_cpu_ns():
    """Nanoseconds this thread has run on a CPU (a system call, about a
    microsecond). The kernel leaves out the time a VM's host took the CPU away
    (steal time, with paravirtual time accounting) and the time the thread
    waited or slept: the callback's own work."""
    return _clock_thread_cpu_ns()


# -- calling C through function pointers --------------------------------------
# Optional libraries (Rubber Band) are reached through addresses stored in the
# state, not through symbols the JIT must resolve: kernels stay cacheable and
# still link on machines without the library (the address is then 0).

_C_TYPES = {"ptr": ir.IntType(8).as_pointer(), "u32": ir.IntType(32), "i32": ir.IntType(32),
            "f64": ir.DoubleType(), "void": ir.VoidType()}
_NB_ARGS = {"ptr": types.int64, "u32": types.int64, "i32": types.int64, "f64": types.float64}
_NB_RET = {"void": types.void, "i32": types.int64, "u32": types.int64}


def _c_codegen(ret, params):
    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(_C_TYPES[ret], [_C_TYPES[p] for p in params])
        fn = builder.inttoptr(args[0], fnty.as_pointer())
        cargs = []
        for value, kind in zip(args[1:], params):
            if kind == "ptr":
                value = builder.inttoptr(value, _C_TYPES["ptr"])
            elif kind in ("u32", "i32"):
                value = builder.trunc(value, ir.IntType(32))
            cargs.append(value)
        result = builder.call(fn, cargs)
        if ret == "void":
            return context.get_dummy_value()
        extend = builder.sext if ret == "i32" else builder.zext
        return extend(result, ir.IntType(64))
    return codegen


def c_function(ret: str, *params: str):
    """An intrinsic ``f(address, *args)`` calling the C function at ``address``
    with the given parameter kinds ("ptr" as an int64 address, "u32", "i32",
    "f64") and return kind ("void", "i32", "u32")."""
    codegen = _c_codegen(ret, params)
    sig_args = [_NB_ARGS[p] for p in params]
    sig = _NB_RET[ret](types.int64, *sig_args)
    if len(params) == 1:
        @intrinsic
        def call(typingctx, address, a):
            return sig, codegen
    elif len(params) == 2:
        @intrinsic
        def call(typingctx, address, a, b):
            return sig, codegen
    elif len(params) == 3:
        @intrinsic
        def call(typingctx, address, a, b, c):
            return sig, codegen
    elif len(params) == 4:
        @intrinsic
        def call(typingctx, address, a, b, c, d):
            return sig, codegen
    else:
        raise ValueError("1 to 4 parameters")
    return call


_RUSAGE_THREAD = 1          # Linux
_RUSAGE_LONGS = 18          # struct rusage: two timevals (4 longs), then 14 longs
_RU_MAJFLT = 4 + 5          # ru_maxrss, ixrss, idrss, isrss, minflt, then majflt
_RU_NVCSW = 4 + 12          # ... nswap, inblock, oublock, msgsnd, msgrcv, nsignals, then nvcsw
_RU_NIVCSW = 4 + 13


@intrinsic
def _thread_usage(typingctx):
    """(major faults, voluntary switches, involuntary switches) of this thread,
    from getrusage(RUSAGE_THREAD)."""
    sig = types.UniTuple(types.int64, 3)()

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(32), _LONG.as_pointer()])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "getrusage")
        usage = cgutils.alloca_once(builder, _LONG, size=_RUSAGE_LONGS)
        builder.call(fn, [ir.Constant(ir.IntType(32), _RUSAGE_THREAD), usage])
        values = [builder.sext(builder.load(builder.gep(usage, [ir.Constant(ir.IntType(32), i)])),
                               ir.IntType(64)) for i in (_RU_MAJFLT, _RU_NVCSW, _RU_NIVCSW)]
        return context.make_tuple(builder, signature.return_type, values)

    return sig, codegen


@njit(nogil=True, cache=True)
def thread_usage():
    """This thread's (major page faults, voluntary context switches,
    involuntary context switches). Read before and after a callback: a major
    fault means it waited for the disk; a voluntary switch, that it slept (a
    lock, a page being read or remapped); an involuntary one, that another
    thread of this machine took its CPU."""
    return _thread_usage()


@intrinsic
def fence_acquire(typingctx):
    """Later loads stay after every earlier load (the seqlock reader's second check)."""
    sig = types.void()

    def codegen(context, builder, signature, args):
        builder.fence("acquire")
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def fence_release(typingctx):
    """Earlier stores become visible before any later store (the seqlock writer's odd count)."""
    sig = types.void()

    def codegen(context, builder, signature, args):
        builder.fence("release")
        return context.get_dummy_value()

    return sig, codegen
