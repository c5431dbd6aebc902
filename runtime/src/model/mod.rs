//! The Llama-family graph.

pub mod clipping;
pub mod forward;
pub mod kv;
pub mod rope;
pub mod staged;
pub mod synthetic;
pub mod weights;

pub use forward::{BlockCtx, Observer};
pub use kv::{KvCache, LayerKv};
pub use rope::{Rope, RopeStyle};
pub use weights::{Layer, Linear, LinearKind, Model};
