//! bridge facade
