//! Resource usage of containers and pods, read from their cgroups (v1 and v2).
