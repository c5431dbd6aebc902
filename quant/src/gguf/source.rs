//! Where whole-model quantization reads from: anything that describes its tensors the way a GGUF
//! file does (name, GGUF dims, ggml type), hands over each tensor's bytes in that type's layout,
//! and carries GGUF metadata. A GGUF file is one; the runtime presents a Hugging Face folder as
//! another (convert_hf_to_gguf's mapping), so both go through the same pipeline.

use std::borrow::Cow;
use std::path::Path;

use super::reader::GgufFile;
use super::value::Value;
use super::writer::TensorDesc;

pub trait TensorSource {
    /// Names the source in errors.
    fn path(&self) -> &Path;

    /// GGUF metadata, in the order it should be written.
    fn metadata(&self) -> &[(String, Value)];

    /// Every tensor: GGUF name, dims (ne[0] first) and the ggml type of its `tensor_data`.
    fn tensors(&self) -> Vec<TensorDesc>;

    /// The bytes of tensor `index` (of `tensors()`), borrowed from a memory map where possible.
    fn tensor_data(&self, index: usize) -> Cow<'_, [u8]>;

    /// Tensor `index` will not be read again: a memory-mapped source lets go of its pages, so
    /// resident memory stays at the tensors in flight rather than growing to the whole model.
    fn release(&self, _index: usize) {}
}

impl TensorSource for GgufFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    fn tensors(&self) -> Vec<TensorDesc> {
        self.tensors
            .iter()
            .map(|t| TensorDesc::new(t.name.clone(), t.dims.clone(), t.ty))
            .collect()
    }

    fn tensor_data(&self, index: usize) -> Cow<'_, [u8]> {
        Cow::Borrowed(GgufFile::tensor_data(self, &self.tensors[index]))
    }

    fn release(&self, index: usize) {
        self.release_tensor(&self.tensors[index]);
    }
}
