// A 5 x 7 bitmap font for printable ASCII (32..126), drawn for this project, so that
// detections can be labelled without a font library. Scaled up by whole pixels when drawn.
#pragma once

#include <cstdint>

namespace vt {

constexpr int kGlyphWidth = 5, kGlyphHeight = 7;

// The 7 rows of the glyph for `c`, top first; bit 4 of a row is its leftmost pixel. Characters
// outside 32..126 get the glyph of '?'.
const uint8_t* glyph_rows(char c);

}  // namespace vt
