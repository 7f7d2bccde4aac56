// visiontrain: the command-line entry point. Picks the subcommand, runs it, and turns any
// error into one clear message and a non-zero exit. In a job of several ranks an error on
// one rank ends the whole job (MPI_Abort), so no rank is left waiting for it.
#include <cstdio>
#include <cstring>
#include <string>

#include "comm/world.h"
#include "layers/check.h"
#include "trainer/commands.h"

namespace {

struct Command {
  const char* name;
  int (*run)(int, char**);
  const char* help;
};

const Command kCommands[] = {
    {"info", vt::cmd_info, "show the build (CUDA, architectures, BLAS) and the devices found"},
    {"selftest", vt::cmd_selftest, "run every op forward and backward on this machine's backends and compare them"},
    {"convert", vt::cmd_convert, "convert a YOLO, COCO or Pascal VOC dataset into HDF5 shards"},
    {"synth", vt::cmd_synth, "write a synthetic detection dataset (shapes on textures) as shards"},
    {"train", vt::cmd_train, "train a detector on HDF5 shards, validating with COCO mAP every epoch"},
    {"eval", vt::cmd_eval, "COCO mAP of a trained run file on a dataset split, per class"},
    {"detect", vt::cmd_detect, "detect objects in images: boxes as JSON and drawn on the images"},
    {"export", vt::cmd_export, "export a run file's weights as safetensors or ONNX (decode and NMS built in)"},
    {"inspect", vt::cmd_inspect, "show a dataset's counts, classes and boxes, and verify its checksums"},
};

void usage(FILE* out) {
  std::fprintf(out,
               "visiontrain %s: distributed data-parallel training of vision models\n\n"
               "usage: visiontrain <command> [options]     (visiontrain <command> --help for its options)\n\n"
               "commands:\n",
               VT_VERSION);
  for (const Command& c : kCommands) std::fprintf(out, "  %-10s %s\n", c.name, c.help);
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // whole lines reach a log file as they happen
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    usage(stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "--version")) {
    std::printf("visiontrain %s\n", VT_VERSION);
    return 0;
  }
  for (const Command& c : kCommands) {
    if (std::strcmp(argv[1], c.name) != 0) continue;
    std::string name = std::string("visiontrain ") + c.name;
    argv[1] = name.data();
    int rc = 1;
    try {
      rc = c.run(argc - 1, argv + 1);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "visiontrain %s: error: %s\n", c.name, e.what());
      if (vt::comm::world().size > 1) {
        std::fprintf(stderr, "visiontrain %s: rank %d failed; ending the job of %d ranks\n", c.name,
                     vt::comm::world().rank, vt::comm::world().size);
        vt::comm::abort_job(1);
      }
    }
    vt::comm::finalize_world();
    return rc;
  }
  std::fprintf(stderr, "visiontrain: unknown command '%s'\n\n", argv[1]);
  usage(stderr);
  return 2;
}
