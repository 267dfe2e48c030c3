! decay: du/dt = -k u from u(x, 0) = a sin(pi x) on `size` points of (0, 1), one exact exponential
! step per time step, so u(x, t) = a exp(-k t) sin(pi x) (gensim.simulations.DecayingWave),
! streamed to a gensim study through the Fortran binding. Parameters from GENSIM_PARAM_a and
! GENSIM_PARAM_k (simulation=external); sends one float32 field "u" of shape (size,) at
! t = (step + 1) / n_steps. Usage: decay [size n_steps].
program decay
  use, intrinsic :: iso_c_binding
  use, intrinsic :: iso_fortran_env, only: error_unit
  use gensim_client
  implicit none
  real(c_double), parameter :: pi = acos(-1.0d0)
  character(kind=c_char, len=2), target :: name = "u" // c_null_char
  real(c_float), allocatable, target :: out(:)
  real(c_double), allocatable :: u(:)
  real(c_double) :: a, k, dt
  type(gensim_field) :: fields(1)
  type(c_ptr) :: client, data(1)
  integer :: size, n_steps, step, i
  character(len=32) :: arg

  size = 16
  n_steps = 10
  if (command_argument_count() >= 2) then
     call get_command_argument(1, arg)
     read (arg, *) size
     call get_command_argument(2, arg)
     read (arg, *) n_steps
  end if
  a = param("GENSIM_PARAM_a")
  k = param("GENSIM_PARAM_k")
  dt = 1.0d0 / n_steps
  allocate(u(size), out(size))
  u = [(a * sin(pi * (i - 0.5d0) / size), i = 1, size)]

  fields(1) = gensim_field(c_loc(name), GENSIM_FLOAT32, 1, [int(size, c_int32_t), 0_c_int32_t, 0_c_int32_t, &
                                                              0_c_int32_t])
  client = gensim_open_env(1_c_int, fields)
  if (.not. c_associated(client)) then
     write (error_unit, '(a)') "decay: " // gensim_last_error()
     stop 4
  end if
  do step = 0, n_steps - 1
     u = u * exp(-k * dt)
     out = real(u, c_float)
     data(1) = c_loc(out)
     if (gensim_send(client, int(step, c_int32_t), (step + 1) * dt, data) /= 0) then
        write (error_unit, '(a)') "decay: " // gensim_error(client)
        call gensim_close(client)
        stop 5
     end if
  end do
  if (gensim_end(client) /= 0) then
     write (error_unit, '(a)') "decay: " // gensim_error(client)
     stop 5
  end if
  call gensim_close(client)

contains

  real(c_double) function param(variable)
    character(len=*), intent(in) :: variable
    character(len=64) :: value
    integer :: status
    call get_environment_variable(variable, value, status=status)
    if (status /= 0) then
       write (error_unit, '(a)') "decay: " // variable // " is not set (run it with gensim-train simulation=external)"
       stop 2
    end if
    read (value, *) param
  end function param
end program decay
