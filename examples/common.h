// The training loop the example programs share: flags, progress bar, per-epoch test accuracy,
// checkpoint + learning-curve PNG each epoch, --resume, and a final summary.
#pragma once
#include <minigrad/minigrad.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <sstream>
#include <string>

namespace examples {

using namespace minigrad;
using clk = std::chrono::steady_clock;

struct TrainConfig {
  std::string name;
  int64_t epochs = 5, batch_size = 64, threads = 0;
  int64_t max_steps = 0;  // > 0: stop each epoch after this many steps (quick runs, tests)
  double lr = 1e-3;
  std::string optimizer = "adam";  // "adam" or "sgd" (momentum 0.9, nesterov)
  double weight_decay = 0.0;
  std::string data, out;
  bool resume = false;
  bool deterministic = false;  // use_deterministic_algorithms: the same bits at any --threads
  uint64_t seed = 1;
  Device device = Device::cpu();  // --device cpu|cuda|cuda:N
};

// A flag's value as a number of type T, all of it (a clear error otherwise).
template <class T>
T flag_number(const std::string& prog, const std::string& flag, const std::string& v) {
  T out{};
  const auto [p, err] = std::from_chars(v.data(), v.data() + v.size(), out);
  MG_CHECK(err == std::errc() && p == v.data() + v.size() && !v.empty(), prog, ": ", flag, " expects ",
           std::is_floating_point_v<T> ? "a number" : std::is_signed_v<T> ? "an integer" : "a non-negative integer",
           ", got \"", v, "\"");
  return out;
}

// Parses the common flags over `c`'s defaults; `extra` handles program-specific ones (returns
// false for an unknown flag). Exits on --help.
inline TrainConfig parse_args(int argc, char** argv, TrainConfig c,
                              const std::function<bool(const std::string&, const std::string&)>& extra = {},
                              const std::string& extra_help = "") {
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (k == "--help" || k == "-h") {
      std::cout << "usage: " << c.name << " [--epochs N] [--batch-size B] [--lr LR] [--optimizer adam|sgd] "
                << "[--weight-decay WD] [--data DIR] [--out DIR] [--resume] [--threads T] [--deterministic] [--seed S] [--max-steps N] "
                << "[--device cpu|cuda|cuda:N]"
                << extra_help << "\n";
      std::exit(0);
    }
    if (k == "--resume" || k == "--deterministic") {
      (k == "--resume" ? c.resume : c.deterministic) = true;
      continue;
    }
    MG_CHECK(i + 1 < argc, c.name, ": ", k, " needs a value (see --help)");
    std::string v = argv[++i];
    if (k == "--epochs") c.epochs = flag_number<int64_t>(c.name, k, v);
    else if (k == "--batch-size") c.batch_size = flag_number<int64_t>(c.name, k, v);
    else if (k == "--lr") c.lr = flag_number<double>(c.name, k, v);
    else if (k == "--optimizer") c.optimizer = v;
    else if (k == "--weight-decay") c.weight_decay = flag_number<double>(c.name, k, v);
    else if (k == "--data") c.data = v;
    else if (k == "--out") c.out = v;
    else if (k == "--threads") c.threads = flag_number<int64_t>(c.name, k, v);
    else if (k == "--seed") c.seed = flag_number<uint64_t>(c.name, k, v);
    else if (k == "--max-steps") c.max_steps = flag_number<int64_t>(c.name, k, v);
    else if (k == "--device") c.device = parse_device(v);
    else MG_CHECK(extra && extra(k, v), c.name, ": unknown option ", k, " (see --help)");
  }
  MG_CHECK(c.epochs > 0 && c.batch_size > 0 && c.lr > 0, c.name, ": epochs, batch size and lr must be positive");
  MG_CHECK(c.optimizer == "adam" || c.optimizer == "sgd", c.name, ": --optimizer is adam or sgd, got ", c.optimizer);
  MG_CHECK(device_available(c.device), c.name, ": --device ", c.device, " cannot be used: ",
           c.device.is_cuda() ? cuda_unavailable_reason() : "unknown device");
  return c;
}

inline std::string join(const std::vector<double>& v) {
  std::ostringstream os;
  os.precision(17);
  for (size_t i = 0; i < v.size(); ++i) os << (i ? "," : "") << v[i];
  return os.str();
}

inline std::vector<double> split(const std::string& s) {
  std::vector<double> v;
  std::stringstream ss(s);
  std::string x;
  while (std::getline(ss, x, ',')) v.push_back(flag_number<double>("split", "a list", x));
  return v;
}

// Test accuracy (and mean loss) in eval mode, in batches of 500.
inline double evaluate(nn::Module& model, const io::TensorDataset& ds, const io::Transform& tf, double* loss_out,
                       Device device = Device::cpu()) {
  model.eval();
  NoGradGuard ng;
  Generator gen(0);
  int64_t correct = 0;
  double loss = 0;
  for (int64_t s = 0; s < ds.size(); s += 500) {
    const int64_t n = std::min<int64_t>(500, ds.size() - s);
    Tensor x = io::images_to_float(ds.images.narrow(0, s, n));
    if (tf) x = tf(x, gen);
    x = x.to(device);
    Tensor y = ds.labels.narrow(0, s, n).to(device);
    Tensor logits = model(x);
    loss += cross_entropy(logits, y, Reduction::Sum).item();
    correct += sum(eq(argmax(logits, 1), y)).item<int64_t>();
  }
  model.train();
  if (loss_out) *loss_out = loss / double(std::max<int64_t>(ds.size(), 1));
  return double(correct) / double(std::max<int64_t>(ds.size(), 1));
}

// Trains `model` and returns the final test accuracy. train_tf runs on each training batch (in the
// loader's thread); eval_tf on test batches.
inline double train(const TrainConfig& c, nn::Module& model, const io::TensorDataset& train_set,
                    const io::TensorDataset& test_set, std::vector<io::Transform> train_tf, io::Transform eval_tf) {
  if (c.threads > 0) set_num_threads(int(c.threads));
  use_deterministic_algorithms(c.deterministic);
  std::filesystem::create_directories(c.out);
  const std::string ckpt = c.out + "/checkpoint.safetensors", plot = c.out + "/learning_curve.png";
  model.to(c.device);
  std::cout << c.name << ": " << train_set.size() << " training and " << test_set.size() << " test images, "
            << get_num_threads() << " threads, " << c.device << "\n"
            << model << "\n";
  std::unique_ptr<optim::Optimizer> opt;
  if (c.optimizer == "adam") {
    opt = std::make_unique<optim::AdamW>(model.parameters(),
                                         optim::AdamWOptions{.lr = c.lr, .weight_decay = c.weight_decay});
  } else {
    opt = std::make_unique<optim::SGD>(model.parameters(), optim::SGDOptions{.lr = c.lr, .momentum = 0.9,
                                                                            .weight_decay = c.weight_decay, .nesterov = true});
  }
  optim::CosineAnnealingLR sched(*opt, c.epochs);
  std::vector<double> train_loss, test_loss, train_acc, test_acc;
  int64_t start = 0;
  if (c.resume) {
    std::map<std::string, std::string> meta;
    start = io::load_checkpoint(ckpt, model, opt.get(), &meta);
    sched.set_last_epoch(start);
    train_loss = split(meta["train_loss"]), test_loss = split(meta["test_loss"]);
    train_acc = split(meta["train_acc"]), test_acc = split(meta["test_acc"]);
    std::cout << "resumed from " << ckpt << " after epoch " << start << "\n";
  }
  io::DataLoader loader(train_set, {.batch_size = c.batch_size, .shuffle = true, .seed = c.seed, .transforms = train_tf});
  const int64_t steps = c.max_steps > 0 ? std::min(c.max_steps, loader.batches_per_epoch()) : loader.batches_per_epoch();
  const bool tty = isatty(2);
  const auto t_all = clk::now();
  for (int64_t epoch = start + 1; epoch <= c.epochs; ++epoch) {
    loader.start_epoch(epoch - 1);  // the order depends on the epoch number: a resumed run sees the same
    const auto t0 = clk::now();
    auto last_print = t0;
    double loss_sum = 0;
    int64_t seen = 0, correct = 0, b = 0;
    while (b < steps) {
      auto batch = loader.next();
      if (!batch) break;
      opt->zero_grad();
      Tensor target = batch->target.to(c.device);
      Tensor logits = model(batch->data.to(c.device));
      Tensor loss = cross_entropy(logits, target);
      loss.backward();
      opt->step();
      const int64_t n = target.size(0);
      loss_sum += loss.item() * double(n);
      correct += sum(eq(argmax(logits.detach(), 1), target)).item<int64_t>();
      seen += n;
      ++b;
      const auto now = clk::now();
      if (tty && (std::chrono::duration<double>(now - last_print).count() > 0.2 || b == steps)) {
        const int width = 30, fill = int(double(width) * double(b) / double(steps));
        std::fprintf(stderr, "\repoch %lld/%lld [%s%s] %lld/%lld  loss %.4f  %.0f img/s ", (long long)epoch,
                     (long long)c.epochs, std::string(size_t(fill), '#').c_str(),
                     std::string(size_t(width - fill), '.').c_str(), (long long)b, (long long)steps,
                     loss_sum / double(seen), double(seen) / std::chrono::duration<double>(now - t0).count());
        std::fflush(stderr);
        last_print = now;
      }
    }
    const double secs = std::chrono::duration<double>(clk::now() - t0).count();
    sched.step();
    double tl = 0;
    const double acc = evaluate(model, test_set, eval_tf, &tl, c.device);
    train_loss.push_back(loss_sum / double(std::max<int64_t>(seen, 1)));
    train_acc.push_back(double(correct) / double(std::max<int64_t>(seen, 1)));
    test_loss.push_back(tl);
    test_acc.push_back(acc);
    if (tty) std::fprintf(stderr, "\n");
    std::printf("epoch %lld/%lld  train loss %.4f  train acc %.2f%%  test loss %.4f  test acc %.2f%%  %.1f s (%.0f img/s)\n",
                (long long)epoch, (long long)c.epochs, train_loss.back(), 100 * train_acc.back(), tl, 100 * acc, secs,
                double(seen) / secs);
    std::fflush(stdout);
    io::save_checkpoint(ckpt, model, opt.get(), epoch,
                        {{"train_loss", join(train_loss)}, {"test_loss", join(test_loss)},
                         {"train_acc", join(train_acc)}, {"test_acc", join(test_acc)}, {"program", c.name}});
    std::vector<double> tra, tea;
    for (double v : train_acc) tra.push_back(100 * v);
    for (double v : test_acc) tea.push_back(100 * v);
    io::save_learning_curve(plot, "LOSS", {{"TRAIN", train_loss, 30, 90, 200}, {"TEST", test_loss, 220, 60, 40}},
                            "ACCURACY (%)", {{"TRAIN", tra, 30, 90, 200}, {"TEST", tea, 220, 60, 40}});
  }
  const double total = std::chrono::duration<double>(clk::now() - t_all).count();
  const double final_acc = test_acc.empty() ? 0.0 : test_acc.back();
  std::printf("\nsummary: %s, %lld epochs, final test accuracy %.2f%%, best %.2f%%, %.1f s of training this run\n",
              c.name.c_str(), (long long)c.epochs, 100 * final_acc,
              test_acc.empty() ? 0.0 : 100 * *std::max_element(test_acc.begin(), test_acc.end()), total);
  std::printf("checkpoint: %s\nlearning curve: %s\n", ckpt.c_str(), plot.c_str());
  return final_acc;
}

}  // namespace examples
