//! Calibration: data, activation capture through the runtime's observer hook, statistics, and the
//! layer-by-layer pipeline that feeds quant's algorithms one block at a time.

pub mod awq;
pub mod compressed;
pub mod data;
pub mod gptq;
pub mod imatrix;
pub mod pipeline;
pub mod stats;

pub use data::{load, CalibError, CalibOptions, CalibSet};
pub use stats::{ActivationStats, ColumnStats, InputSite};
