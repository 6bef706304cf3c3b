"""Real-time primitives numba lacks: raw addresses as arrays, atomic ring
indices, a monotonic clock. Compiled into the render kernel; any thread.

- ``address_as_pointer``: an int64 address -> ``void*`` for ``numba.carray``
  (how the kernel reaches samples and its own state through the table).
- ``load_acquire`` / ``store_release``: the SPSC rings publish a record by
  storing the index after the record with release ordering; the reader loads
  it with acquire ordering. x86 would not need it; ARM boards (Pi 4) do.
- ``monotonic_ns``: clock_gettime(CLOCK_MONOTONIC) from libc, no GIL.
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


@intrinsic
def _clock_monotonic_ns(typingctx):
    """Calls libc's clock_gettime by symbol name (resolved when the JIT links),
    not through a ctypes pointer, so functions using it stay cacheable."""
    sig = types.int64()

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(32), _LONG.as_pointer()])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "clock_gettime")
        ts = cgutils.alloca_once(builder, _LONG, size=2)
        builder.call(fn, [ir.Constant(ir.IntType(32), _CLOCK_MONOTONIC), ts])
        sec = builder.sext(builder.load(ts), ir.IntType(64))
        nsec = builder.sext(builder.load(builder.gep(ts, [ir.Constant(ir.IntType(32), 1)])), ir.IntType(64))
        return builder.add(builder.mul(sec, ir.Constant(ir.IntType(64), 1_000_000_000)), nsec)

    return sig, codegen


@njit(nogil=True, cache=True)
def monotonic_ns():
    """Nanoseconds on the monotonic clock (the same clock as time.monotonic_ns)."""
    return _clock_monotonic_ns()


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


@intrinsic
def _thread_major_faults(typingctx):
    """Major page faults this thread has taken (getrusage(RUSAGE_THREAD)):
    a fault inside the callback means it waited for the disk."""
    sig = types.int64()

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(32), _LONG.as_pointer()])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "getrusage")
        usage = cgutils.alloca_once(builder, _LONG, size=_RUSAGE_LONGS)
        builder.call(fn, [ir.Constant(ir.IntType(32), _RUSAGE_THREAD), usage])
        value = builder.load(builder.gep(usage, [ir.Constant(ir.IntType(32), _RU_MAJFLT)]))
        return builder.sext(value, ir.IntType(64))

    return sig, codegen


@njit(nogil=True, cache=True)
def thread_major_faults():
    return _thread_major_faults()


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
