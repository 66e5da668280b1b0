"""The master's allocator: the `Allocator` seam (interface), DRF sorters and the hierarchical
DRF allocator. See README.md beside this file."""
