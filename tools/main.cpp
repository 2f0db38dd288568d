#include <csignal>
#include <iostream>

#include "cli.h"

int main(int argc, char** argv) {
  // A file-size limit (ulimit -f) then fails the write with EFBIG, which names the file and keeps
  // the last checkpoint, instead of killing the process mid-write.
  std::signal(SIGXFSZ, SIG_IGN);
  return sluice::cli::run(argc, argv, {std::cout, std::cerr});
}
