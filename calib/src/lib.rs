//! calib
