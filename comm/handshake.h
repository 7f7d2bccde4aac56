// The consistency handshake before step 0: every rank must run the same program on the same
// config, parameter layout and dataset, or the job stops before it computes anything.
//
// Each rank contributes named fields ("config.lr0" = "0.01", "parameter layout" = a digest,
// ...); they are all-gathered, so every rank sees every rank's fields and reaches the same
// verdict. On any difference every rank throws the same vt::Error, which names each differing
// rank and field with both values, and nobody is left waiting in a later collective.
#pragma once

#include <string>
#include <vector>

#include "comm/watchdog.h"

namespace vt::comm {

struct HandshakeField {
  std::string name, value;
};

void handshake(const std::vector<HandshakeField>& fields, Watchdog* watchdog);

// A 64-bit FNV-1a digest of `bytes` in hex, for fields too long to compare as text.
std::string digest(const std::string& bytes);

}  // namespace vt::comm
