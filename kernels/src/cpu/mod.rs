//! CPU kernels: runtime feature detection, SIMD implementations per architecture, scalar fallbacks.

pub mod dot;
pub mod features;

pub use dot::dot_f32;
pub use features::{features, CpuFeatures};
