//! CNI: network configs from `conf_dir`, plugins from `bin_dir`, ADD and DEL per pod.
