// The subcommands of the `visiontrain` program. Each takes the arguments after its own
// name (argv[0] is "visiontrain <name>"), parses them with cxxopts, offers --help, and
// returns the process exit code. Errors are thrown as vt::Error and reported by main().
#pragma once

#include <string>

namespace vt {

namespace data {
struct Manifest;
}

int cmd_info(int argc, char** argv);
int cmd_selftest(int argc, char** argv);
int cmd_convert(int argc, char** argv);
int cmd_synth(int argc, char** argv);
int cmd_inspect(int argc, char** argv);
int cmd_train(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_detect(int argc, char** argv);
int cmd_export(int argc, char** argv);

// What convert and synth print after writing a split: counts, size, and the first problems
// from the report (all of them are in the manifest). Defined in cmd_convert.cpp.
void print_split_summary(const data::Manifest& m, const std::string& dir);

}  // namespace vt
