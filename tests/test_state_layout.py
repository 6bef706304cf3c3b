"""The engine state is described three times, by necessity: ``layout.State``
(the arrays, allocated in Python), ``state.unpack`` (the kernel's view of them
through the address table, written out because numba needs each array's rank
and dtype at compile time) and the ``state.S_*`` positions. A field added,
moved or reshaped in one place and not the others fails here, not as a
kernel reading the wrong memory."""

from __future__ import annotations

from dataclasses import fields

from stemdeck.engine import layout as L
from stemdeck.engine import state as S


def state_fields() -> list[str]:
    return [f.name for f in fields(L.State) if f.name != "table"]


def test_unpack_views_every_state_array_in_table_order_with_its_shape_and_dtype():
    st = L.State.allocate(44100, 256, 8, 8, 64, 120.0)
    names = state_fields()
    views = S.unpack(st.table)
    assert len(views) == len(names) == S.N_ARRAYS
    for name, view in zip(names, views):
        array = getattr(st, name)
        assert view.ctypes.data == array.ctypes.data, f"{name}: unpack views another array"
        assert view.dtype == array.dtype, f"{name}: unpack says {view.dtype}, State has {array.dtype}"
        assert view.shape == array.shape, f"{name}: unpack says {view.shape}, State has {array.shape}"


def test_the_s_positions_name_the_state_fields_in_order():
    """``S_X`` is the position of the field X (upper-cased, or its initials: S_VF
    is voices_f), and every position is used once."""
    positions = {name: value for name, value in vars(S).items()
                 if name.startswith("S_") and isinstance(value, int)}
    assert sorted(positions.values()) == list(range(S.N_ARRAYS))
    names = state_fields()
    for const, i in positions.items():
        field = names[i]
        initials = "".join(word[0] for word in field.split("_")).upper()
        assert const[2:] in (field.upper(), initials), f"{const} = {i}, but field {i} is {field}"
