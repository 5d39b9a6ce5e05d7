"""A software prefetch that numba kernels can call: ``prefetch(a, k)``.

A kernel that reads a tile of rows twice (the forward half, then the backward half from cache)
leaves memory idle while it computes on the tile: the hardware prefetcher follows the stream the
loads make, and the backward half makes none. Where memory is fast for the core's arithmetic
(X in a large last-level cache, or a CPU whose memory is quick for its cores), that idle time is what separates the kernel from
one read of X. ``prefetch`` asks for the next tile's cache lines while the current one is being
computed on, so the reads and the arithmetic overlap.

``prefetch(a, k)`` hints that the ``k``-th entry of the C-contiguous array ``a`` (counted in
memory order, whatever its shape) will be read soon, and fetches its cache line into the second-
level cache (``llvm.prefetch`` with locality 2: ``prefetcht1`` on x86, ``prfm pldl2keep`` on
ARM). It is only a hint: it never faults, even past the array's end, changes no value and is
dropped where the target has no such instruction. Each call covers one line of
:data:`LINE_BYTES`.

numba's on-disk cache checks only the calling kernel's source file: after a change here run
``make clean-kernels``, or the kernels keep the old code.
"""

from __future__ import annotations

#: bytes of one cache line, the unit a prefetch fetches (64 on x86 and most ARM cores)
LINE_BYTES = 64
#: the cache level asked for: 3 keeps the line in every level (``prefetcht0``), 2 from the second
#: level down (``prefetcht1``). On the fused binary pass the two were alike (benchmarks/README.md);
#: 2 leaves the first-level cache to the tile being computed on
_LOCALITY = 2

try:  # pragma: no branch - numba is installed with the package; guard for a broken install
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover
    intrinsic = None


if intrinsic is not None:

    @intrinsic
    def prefetch(typingctx, a, k):
        """``prefetch(a, k)``: fetch the cache line of ``a``'s ``k``-th entry in memory order."""
        if not (isinstance(a, types.Array) and a.layout == "C" and isinstance(k, types.Integer)):
            return None
        sig = types.void(a, k)

        def codegen(context, builder, signature, args):
            array_type = signature.args[0]
            array = context.make_array(array_type)(context, builder, args[0])
            offset = context.cast(builder, args[1], signature.args[1], types.intp)
            byte = ir.IntType(8).as_pointer()
            address = builder.gep(builder.bitcast(array.data, context.get_value_type(array_type.dtype).as_pointer()),
                                  [offset])
            i32 = ir.IntType(32)
            hint = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [byte, i32, i32, i32]), "llvm.prefetch.p0")
            # read (0), locality, data cache (1)
            builder.call(hint, [builder.bitcast(address, byte), i32(0), i32(_LOCALITY), i32(1)])
            return context.get_dummy_value()

        return sig, codegen
