// igemm_plan: how the tensor-core convolutions (layers/conv2d_igemm.h) tile a model's convs,
// without a GPU. For every distinct conv of each model at the batch and image size: the three
// GEMMs (forward, input gradient per stride phase, weight gradient in its chosen orientation)
// with M, N, K, the tile (igemm::tile_n: 128 x 32, 128 x 64 or 128 x 128), the weight gradient's slices,
// and the share of the padded tile work that is useful (the conv's multiply-adds over the
// C tiles' area times K rounded up to the K step). The model totals, weighted by each conv's
// count, with the same share for a single 128 x 64 tile and M = Cout weight gradients (the
// first version of the kernel) beside them. Arithmetic on shapes, not a timing.
//
//   ./build/bench/igemm_plan [--models configs/yolov8n.yaml,configs/yolov8s.yaml]
//                            [--batch 64] [--imgsz 640] [--quiet]
#include <cstdio>
#include <cxxopts.hpp>
#include <sstream>
#include <string>

#include "bench/conv_shapes.h"
#include "layers/conv2d_igemm.h"

namespace {

using namespace vt;
using namespace vt::igemm;

int64_t up(int64_t a, int64_t t) {
  return (a + t - 1) / t * t;
}

// Useful and padded multiply-adds of the conv's three products, as planned now and as the
// single-tile first version planned them.
struct Work {
  double useful = 0, now[3] = {0, 0, 0}, first[3] = {0, 0, 0};
};

const char* tile_name(int64_t rows, int64_t cols) {
  const int64_t n = tile_n(rows, cols);
  return n == 32 ? "128x32" : n == 64 ? "128x64" : "128x128";
}

Work plan(const bench::ConvShape& c, bool print) {
  const Conv2dDims d = conv2d_dims(c.x, c.w, c.p);
  const int64_t p = d.n * d.ho * d.wo, f = d.kh * d.kw * d.cin;
  Work w;
  w.useful = double(p) * double(d.cout) * double(f);
  w.now[0] = double(padded_tile_area(p, d.cout)) * double(up(f, kBK));
  w.first[0] = double(up(p, 128) * up(d.cout, 64)) * double(up(f, kBK));
  for (int ph = 0; ph < ConvDgrad<float>::phases(d); ++ph) {
    const ConvDgrad<float> g(d, nullptr, nullptr, nullptr, ph);
    if (g.M == 0 || g.K == 0) continue;
    w.now[1] += double(padded_tile_area(g.M, g.N)) * double(up(g.K, kBK));
    w.first[1] += double(up(g.M, 128) * up(g.N, 64)) * double(up(g.K, kBK));
  }
  const bool t = wgrad_transposed(d);
  const int splits = wgrad_splits(d);
  const int64_t rows = t ? f : d.cout, cols = t ? d.cout : f;
  w.now[2] = double(padded_tile_area(rows, cols)) * double(int64_t(splits) * wgrad_chunk(d, splits));
  w.first[2] = double(up(d.cout, 128) * up(f, 64)) * double(up(p, kBK));
  if (print)
    std::printf(
        "  %-44s %3d | fwd %7lld x %4lld x %5lld  %s %.2f | dgrad %.2f | wgrad %s%4lld x %4lld, %3d slices  "
        "%s %.2f\n",
        c.key().c_str(), c.count, (long long)p, (long long)d.cout, (long long)f, tile_name(p, d.cout),
        w.useful / w.now[0], w.useful / w.now[1], t ? "T " : "  ", (long long)rows, (long long)cols, splits,
        tile_name(rows, cols), w.useful / w.now[2]);
  return w;
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options opts("igemm_plan",
                        "How the tensor-core convolutions tile a model's convs (no GPU needed)");
  // clang-format off
  opts.add_options()
    ("models", "model specs, comma-separated",
     cxxopts::value<std::string>()->default_value("configs/yolov8n.yaml,configs/yolov8s.yaml"))
    ("batch", "batch size", cxxopts::value<int64_t>()->default_value("64"))
    ("imgsz", "image side", cxxopts::value<int64_t>()->default_value("640"))
    ("quiet", "totals only")
    ("h,help", "show this help");
  // clang-format on
  try {
    const auto a = opts.parse(argc, argv);
    if (a.count("help")) {
      std::printf("%s\n", opts.help().c_str());
      return 0;
    }
    const int64_t batch = a["batch"].as<int64_t>(), imgsz = a["imgsz"].as<int64_t>();
    std::stringstream models(a["models"].as<std::string>());
    for (std::string m; std::getline(models, m, ',');) {
      std::printf("%s, batch %lld, %lld x %lld: useful share of the padded tile work per product\n",
                  m.c_str(), (long long)batch, (long long)imgsz, (long long)imgsz);
      double useful = 0, now[3] = {0, 0, 0}, first[3] = {0, 0, 0};
      for (const bench::ConvShape& c : bench::conv_shapes(m, batch, imgsz)) {
        const Work w = plan(c, !a.count("quiet"));
        useful += c.count * w.useful;
        for (int k = 0; k < 3; ++k) now[k] += c.count * w.now[k], first[k] += c.count * w.first[k];
      }
      std::printf(
          "  model: %.1f GFLOP per product; useful share forward %.2f, dgrad %.2f, wgrad %.2f "
          "(one 128 x 64 tile, wgrad M = Cout: %.2f, %.2f, %.2f)\n",
          2 * useful / 1e9, useful / now[0], useful / now[1], useful / now[2], useful / first[0],
          useful / first[1], useful / first[2]);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "igemm_plan: %s\n", e.what());
    return 1;
  }
  return 0;
}
