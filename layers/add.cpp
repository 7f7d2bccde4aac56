// Elementwise add: contract checks and backend dispatch (see add.h).
#include "layers/add.h"

#include <utility>

#include "layers/op.h"

namespace vt {

void add_forward(const Tensor& a, const Tensor& b, const Tensor& y, Stream s) {
  const char* op = "add_forward";
  check_types(op, {{"a", a}, {"b", b}, {"y", y}}, {});
  check_shape(op, {"b", b}, a.shape());
  check_shape(op, {"y", y}, a.shape());
  if (a.is_cuda()) VT_CUDA_CALL(op, cuda::add_forward(a, b, y, s));
  else cpu::add_forward(a, b, y);
}

void add_backward(const Tensor& dy, const Tensor* da, const Tensor* db, Stream s, bool overwrite_da,
                  bool overwrite_db) {
  const char* op = "add_backward";
  check_types(op, {{"dy", dy}}, {});
  auto check_grad = [&](const char* name, const Tensor* g) {
    if (g == nullptr) return;
    check_types(op, {{"dy", dy}, {name, *g}}, {});
    check_shape(op, {name, *g}, dy.shape());
    op_check(g->raw() != dy.raw() || dy.numel() == 0, op, cat(name, " must not alias dy"), {{"dy", dy}});
  };
  check_grad("da", da);
  check_grad("db", db);
  VT_CHECK(!(overwrite_db && da && db && da->raw() == db->raw()), op,
           ": db is da, so its second pass must add (overwrite_db would drop da's dy)");
  // One pass per gradient: sequential on the stream, so da == db gets both.
  for (const auto& [g, overwrite] : {std::pair{da, overwrite_da}, std::pair{db, overwrite_db}}) {
    if (g == nullptr) continue;
    if (overwrite) copy_async(dy, *g, s);
    else if (dy.is_cuda()) VT_CUDA_CALL(op, cuda::accumulate(dy, *g, s));
    else cpu::accumulate(dy, *g);
  }
}

void scale(const Tensor& x, double alpha, Stream s) {
  check_types("scale", {{"x", x}}, {});
  if (x.is_cuda()) VT_CUDA_CALL("scale", cuda::scale(x, alpha, s));
  else cpu::scale(x, alpha);
}

}  // namespace vt
