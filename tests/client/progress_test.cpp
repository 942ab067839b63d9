// SPDX-License-Identifier: Apache-2.0
// The live progress line and how jobs read.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>

#include "job_format.h"
#include "job_watch.h"
#include "progress_line.h"

namespace cpmctl {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// What a ProgressLine wrote to a memory stream.
class Captured {
 public:
  Captured() : file_(open_memstream(&data_, &size_)) {}
  ~Captured() {
    std::fclose(file_);
    std::free(data_);
  }
  FILE* file() { return file_; }
  std::string text() {
    std::fflush(file_);
    return std::string(data_, size_);
  }

 private:
  char* data_ = nullptr;
  size_t size_ = 0;
  FILE* file_;
};

cpm::v1::TrainProgress progress(int64_t step) {
  cpm::v1::TrainProgress p;
  p.set_step(step);
  p.set_max_steps(1000);
  p.set_loss(1.23456);
  p.set_learning_rate(9.87e-7);
  p.set_tokens_per_second(412.4);
  p.mutable_elapsed()->set_seconds(62);
  p.mutable_eta()->set_seconds(455);
  return p;
}

TEST(ProgressLine, ATerminalRedrawsOneLineInPlace) {
  Captured out;
  {
    ProgressLine line(out.file(), true);
    line.update("step 1");
    line.update("step 2");
    line.print_above("eval at step 2");
  }
  EXPECT_EQ(out.text(), "\rstep 1\x1b[K\rstep 2\x1b[K\r\x1b[Keval at step 2\nstep 2\n");
}

TEST(ProgressLine, APipeGetsOneLinePerUpdate) {
  Captured out;
  {
    ProgressLine line(out.file(), false);
    line.update("step 1");
    line.print_above("eval");
    line.update("step 2");
  }
  EXPECT_EQ(out.text(), "step 1\neval\nstep 2\n");
}

TEST(ProgressLine, TrainLineShowsStepLossLrSpeedElapsedAndEta) {
  const std::string line = train_progress_line(progress(120), 200);
  EXPECT_EQ(line,
            "step 120/1000 [##..................]  12%  loss 1.2346  lr 9.87e-07  412 tok/s  1m 2s elapsed  "
            "ETA 7m 35s");
  // A line wider than the terminal would wrap and could not be redrawn.
  EXPECT_EQ(train_progress_line(progress(120), 40).size(), 39u);
  EXPECT_THAT(train_progress_line(progress(1000), 200), HasSubstr("100%"));
}

TEST(ProgressLine, UploadLine) {
  EXPECT_EQ(upload_progress_line(512 << 10, 1 << 20, 2.0, 200),
            "uploading [##########..........]  50%  512.0 KiB/1.0 MiB  256.0 KiB/s  ETA 2s");
}

TEST(JobFormat, StateWordsRoundTrip) {
  for (int s = cpm::v1::JOB_STATE_QUEUED; s <= cpm::v1::JOB_STATE_CANCELLED; ++s) {
    const auto state = static_cast<cpm::v1::JobState>(s);
    EXPECT_EQ(parse_state_word(state_word(state)), state);
  }
  EXPECT_EQ(parse_state_word("RUNNING"), cpm::v1::JOB_STATE_RUNNING);
  EXPECT_FALSE(parse_state_word("done").has_value());
  EXPECT_TRUE(is_terminal(cpm::v1::JOB_STATE_CANCELLED));
  EXPECT_FALSE(is_terminal(cpm::v1::JOB_STATE_CANCELLING));
}

TEST(JobFormat, TablesAndDetails) {
  cpm::v1::Job job;
  job.set_id("j-1");
  job.set_state(cpm::v1::JOB_STATE_RUNNING);
  job.mutable_spec()->set_name("latex");
  job.mutable_spec()->set_max_steps(1000);
  job.mutable_spec()->set_dataset_id("d-9");
  *job.mutable_progress() = progress(120);
  job.mutable_last_eval()->set_step(100);
  job.mutable_last_eval()->set_exact_match(0.25);
  job.mutable_last_eval()->set_num_examples(8);
  const std::string row = jobs_table_row(job);
  EXPECT_THAT(row, StartsWith("j-1"));
  EXPECT_THAT(row, HasSubstr("running"));
  EXPECT_THAT(row, HasSubstr("120/1000"));
  EXPECT_THAT(row, HasSubstr("25.0%"));
  const std::string details = job_details(job);
  EXPECT_THAT(details, HasSubstr("dataset         id d-9"));
  EXPECT_THAT(details, HasSubstr("step 120/1000"));
  EXPECT_THAT(details, HasSubstr("eval at step 100"));
  EXPECT_THAT(eval_line(job.last_eval()), HasSubstr("exact match 25.0%"));
}

TEST(JobWatch, ReattachResumesAfterTheLastStepSeen) {
  EXPECT_EQ(reattach_command("j-1", 41), "cpmctl watch j-1 --from-step 42");
  EXPECT_EQ(reattach_command("j-1", -1), "cpmctl watch j-1");
}

}  // namespace
}  // namespace cpmctl
