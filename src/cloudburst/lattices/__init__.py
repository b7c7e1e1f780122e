"""Pure, immutable lattices: the merge-able values stored in the KVS.

Every lattice's ``merge`` is associative, commutative and idempotent and returns a new value, which is what
lets replicas apply updates in any order and still converge. This package is a leaf: stdlib only, no I/O.
"""

from cloudburst.lattices.base import Lattice
from cloudburst.lattices.causal import CausalVersion, MultiKeyCausalLattice, SingleKeyCausalLattice
from cloudburst.lattices.lww import LwwLattice
from cloudburst.lattices.map import MapLattice
from cloudburst.lattices.scalar import BoolLattice, MaxLattice, PriorityLattice
from cloudburst.lattices.sets import OrderedSetLattice, SetLattice
from cloudburst.lattices.vector_clock import CausalOrder, VectorClock

__all__ = [
    "BoolLattice",
    "CausalOrder",
    "CausalVersion",
    "Lattice",
    "LwwLattice",
    "MapLattice",
    "MaxLattice",
    "MultiKeyCausalLattice",
    "OrderedSetLattice",
    "PriorityLattice",
    "SetLattice",
    "SingleKeyCausalLattice",
    "VectorClock",
]
