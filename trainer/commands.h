// The subcommands of the `visiontrain` program. Each takes the arguments after its own
// name (argv[0] is "visiontrain <name>"), parses them with cxxopts, offers --help, and
// returns the process exit code. Errors are thrown as vt::Error and reported by main().
#pragma once

namespace vt {

int cmd_info(int argc, char** argv);
int cmd_selftest(int argc, char** argv);

}  // namespace vt
