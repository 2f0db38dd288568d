#include "train/stop_signal.h"

#include <unistd.h>

#include <atomic>
#include <csignal>

namespace sluice {

namespace {

std::atomic<int> g_signal{0};
std::atomic<int> g_count{0};
struct sigaction g_old_int, g_old_term;

void on_signal(int sig) {
  const int n = ++g_count;
  if (sig == SIGINT && n >= 2) {
    const char msg[] = "\nsecond interrupt: exiting without a checkpoint\n";
    (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
    ::_exit(130);
  }
  g_signal = sig;
}

}  // namespace

StopSignal::StopSignal() {
  g_signal = 0;
  g_count = 0;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, &g_old_int);
  sigaction(SIGTERM, &sa, &g_old_term);
}

StopSignal::~StopSignal() {
  sigaction(SIGINT, &g_old_int, nullptr);
  sigaction(SIGTERM, &g_old_term, nullptr);
}

bool StopSignal::requested() const { return g_signal != 0; }
int StopSignal::signal() const { return g_signal; }

}  // namespace sluice
