// Export of a model's weights as a safetensors file (huggingface/safetensors), written here
// by hand: the format is one page long and needs no library.
//
// File layout:
//   bytes [0, 8)        N, the header's length, unsigned 64-bit little-endian
//   bytes [8, 8 + N)    the header: UTF-8 JSON, padded with spaces so that 8 + N is a
//                       multiple of 8 (every tensor then starts 8-byte aligned):
//                         {"__metadata__": {"key": "value", ...},        strings only
//                          "<name>": {"dtype": "F32", "shape": [d0, ...],
//                                     "data_offsets": [begin, end]}, ...}
//   bytes [8 + N, end)  the data: each tensor row-major, little-endian float32, at
//                       [begin, end) relative to 8 + N; tensors follow each other in the
//                       order given, without gaps, so the offsets tile the data exactly.
// Tensors keep the caller's order in both the header and the data. What the model export
// puts in it (PyTorch layout, metadata keys) is in docs/formats/export.md.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "checkpoints/torch_state.h"

namespace vt::ckpt {

// The whole file as bytes. Throws vt::Error on an empty or duplicate name, a name
// "__metadata__", or a shape whose product differs from the data's size.
std::string safetensors_bytes(const std::vector<TorchTensor>& tensors,
                              const std::map<std::string, std::string>& metadata);

// Writes safetensors_bytes() to `path` atomically (temp file, fsync, rename); errors name the file.
void write_safetensors(const std::string& path, const std::vector<TorchTensor>& tensors,
                       const std::map<std::string, std::string>& metadata);

}  // namespace vt::ckpt
