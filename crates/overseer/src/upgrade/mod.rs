//! Self-upgrade pipeline (SPEC §5).
