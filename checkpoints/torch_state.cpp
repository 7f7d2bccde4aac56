// Model weights in PyTorch's layout and order (see torch_state.h).
#include "checkpoints/torch_state.h"

#include <cmath>
#include <map>

#include "layers/check.h"

namespace vt::ckpt {

std::vector<float> ohwi_to_oihw(const std::vector<float>& ohwi, int64_t o, int64_t h, int64_t w, int64_t i) {
  std::vector<float> out(ohwi.size());
  for (int64_t a = 0; a < o; ++a)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x)
        for (int64_t c = 0; c < i; ++c)
          out[((a * i + c) * h + y) * w + x] = ohwi[((a * h + y) * w + x) * i + c];
  return out;
}

std::vector<TorchTensor> torch_state(const ModelGraph& graph, const NamedValues& values,
                                     const std::string& source) {
  auto take = [&](const std::string& name, int64_t numel) -> const std::vector<float>& {
    auto it = values.find(name);
    VT_CHECK(it != values.end(), source, ": no weights for ", name);
    VT_CHECK(static_cast<int64_t>(it->second.size()) == numel, source, ": ", name, " has ", it->second.size(),
             " values, the model needs ", numel);
    for (size_t k = 0; k < it->second.size(); ++k)
      VT_CHECK(std::isfinite(it->second[k]), source, ": ", name, " holds a non-finite value (", it->second[k],
               " at flat index ", k, "); refusing to export it");
    return it->second;
  };
  std::map<std::string, int64_t> bn_channels;  // "<bn>.bias" -> C: its statistics follow it
  for (const GraphBn& b : graph.bns) bn_channels[b.name + ".bias"] = b.channels;

  std::vector<TorchTensor> out;
  for (const GraphParam& p : graph.params) {
    const Shape& s = p.shape;
    const std::vector<float>& v = take(p.name, s.numel());
    if (s.rank() == 4)  // conv weight (O, H, W, I)
      out.push_back({p.name, {s[0], s[3], s[1], s[2]}, ohwi_to_oihw(v, s[0], s[1], s[2], s[3])});
    else
      out.push_back({p.name, {s.numel()}, v});
    auto bn = bn_channels.find(p.name);
    if (bn == bn_channels.end()) continue;
    const std::string prefix = p.name.substr(0, p.name.size() - 5);  // without ".bias"
    for (const char* stat : {".running_mean", ".running_var"})
      out.push_back({prefix + stat, {bn->second}, take(prefix + stat, bn->second)});
  }
  return out;
}

}  // namespace vt::ckpt
