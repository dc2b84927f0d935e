//! (in progress: the metrics endpoint)
