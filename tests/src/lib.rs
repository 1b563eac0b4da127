//! Real-kernel test bed.
