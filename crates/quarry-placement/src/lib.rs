//! Pure placement: object name to PG, PG to OSDs
