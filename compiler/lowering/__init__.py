"""Lowering (stage 3): fused graph groups → loop IR kernels, schedules applied, buffers placed."""
