//! Docker image references. (being written)
