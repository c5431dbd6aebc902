//! CPU kernels: runtime feature detection, SIMD implementations per architecture, scalar fallbacks.

pub mod amx;
pub mod dot;
pub mod features;
pub mod int8;
pub mod interleave;
pub mod q8;
pub mod vec_dot;
pub mod vecmath;

pub use dot::dot_f32;
pub use features::{features, CpuFeatures, Isa};
