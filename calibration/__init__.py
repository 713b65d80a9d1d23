"""HDF5 device measurements -> device profiles (built on the crossbar tile engine; see the open issues)."""
