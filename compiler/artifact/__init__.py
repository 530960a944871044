"""What ships: the library with its versioned sidecar, the cross linker, and the device-side runtime wrapper."""
