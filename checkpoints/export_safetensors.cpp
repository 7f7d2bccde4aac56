// safetensors writer (layout in export_safetensors.h).
#include "checkpoints/export_safetensors.h"

#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "data/fileio.h"
#include "layers/check.h"

namespace vt::ckpt {

std::string safetensors_bytes(const std::vector<TorchTensor>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  static_assert(sizeof(float) == 4, "F32 is IEEE binary32");
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> seen;
  size_t offset = 0;
  for (const TorchTensor& t : tensors) {
    VT_CHECK(!t.name.empty() && t.name != "__metadata__", "safetensors: invalid tensor name '", t.name, "'");
    VT_CHECK(seen.insert(t.name).second, "safetensors: tensor ", t.name, " given twice");
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    VT_CHECK(numel == static_cast<int64_t>(t.data.size()), "safetensors: tensor ", t.name, " has ",
             t.data.size(), " values for a shape of ", numel);
    const size_t bytes = t.data.size() * sizeof(float);
    header[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string json = header.dump();
  json.append((8 - (8 + json.size()) % 8) % 8, ' ');
  const uint64_t n = json.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out.reserve(8 + n + offset);
  out += json;
  // The data: float32 as stored in memory, which is little-endian on every target we build.
  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data are little-endian");
  for (const TorchTensor& t : tensors)
    out.append(reinterpret_cast<const char*>(t.data.data()), t.data.size() * sizeof(float));
  return out;
}

void write_safetensors(const std::string& path, const std::vector<TorchTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  data::write_file_atomic(path, safetensors_bytes(tensors, metadata));
}

}  // namespace vt::ckpt
