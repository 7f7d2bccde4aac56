// The consistency handshake (see handshake.h).
#include "comm/handshake.h"

#include <cstdint>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "comm/world.h"
#include "layers/check.h"

namespace vt::comm {

std::string digest(const std::string& bytes) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char out[17];
  std::snprintf(out, sizeof(out), "%016llx", static_cast<unsigned long long>(h));
  return out;
}

void handshake(const std::vector<HandshakeField>& fields, Watchdog* watchdog) {
  nlohmann::json mine = nlohmann::json::array();
  for (const auto& f : fields) mine.push_back({f.name, f.value});
  std::vector<std::string> all;
  {
    Watchdog::Scope scope(watchdog, "the consistency handshake", 0);
    all = allgather_string(mine.dump());
  }
  auto table = [](const std::string& text) {
    std::map<std::string, std::string> t;
    for (const auto& kv : nlohmann::json::parse(text)) t[kv[0].get<std::string>()] = kv[1].get<std::string>();
    return t;
  };
  const auto ref = table(all[0]);
  std::string report;
  int differing = 0;
  for (size_t r = 1; r < all.size(); ++r) {
    const auto t = table(all[r]);
    std::map<std::string, std::pair<std::string, std::string>> diff;  // field -> (rank r, rank 0)
    for (const auto& [k, v] : ref) {
      auto it = t.find(k);
      const std::string theirs = it == t.end() ? "(missing)" : it->second;
      if (theirs != v) diff[k] = {theirs, v};
    }
    for (const auto& [k, v] : t)
      if (!ref.count(k)) diff[k] = {v, "(missing)"};
    if (diff.empty()) continue;
    ++differing;
    for (const auto& [k, v] : diff)
      report += cat("\n  rank ", r, " differs from rank 0 in ", k, ": '", v.first, "' vs '", v.second, "'");
  }
  VT_CHECK(differing == 0, "consistency handshake failed: ", differing, " of ", all.size() - 1,
           " ranks do not match rank 0 (same program, config, model and dataset are needed on every rank):", report);
}

}  // namespace vt::comm
